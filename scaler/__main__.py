"""Command line: `python -m scaler serve` runs the KEDA external scaler;
`python -m scaler simulate` replays a request trace through its decision;
`python -m scaler demo` runs it end to end on this machine."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from urllib.parse import urlsplit

from scaler.demo import cli as demo
from scaler.local_redis import LocalRedis, answers
from scaler.redis_connect import parse_redis_url
from scaler.server import ScalerServer
from scaler.settings import (
    ENVIRONMENT,
    Settings,
    SettingsError,
    configure_logging,
    settings_from_env,
)
from scaler.simulator import cli as simulate

log = logging.getLogger("scaler")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scaler")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve the KEDA external scaler (settings from env)",
        description="Serve the KEDA external scaler. Settings come from the environment, "
        "checked at start (a bad one exits 2 naming it).",
        epilog="environment (default):\n"
        + "".join(f"  {name:<25} {default}\n" for name, default in ENVIRONMENT)
        + "\nEach is explained in docs/configuration.md; the trigger metadata keys too.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--start-local-redis",
        action="store_true",
        help="development: when nothing answers at a localhost REDIS_URL, start a redis-server",
    )
    simulate.add_parser(commands)
    demo.add_parser(commands)
    args = parser.parse_args(argv)
    if args.command == "simulate":
        return simulate.main(args)
    if args.command == "demo":
        return demo.main(args)
    try:
        settings = settings_from_env(os.environ)
    except SettingsError as exc:
        print(f"scaler: bad setting: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings)
    local = _local_redis(settings) if args.start_local_redis else None
    try:
        asyncio.run(_serve(settings))
    except SettingsError as exc:  # e.g. a TLS file that cannot be read, found at start
        print(f"scaler: bad setting: {exc}", file=sys.stderr)
        return 2
    finally:
        if local is not None:
            local.close()
    # The last line of a clean stop: under `make run`, make's own "Interrupt" after Ctrl-C
    # reports the Ctrl-C it saw, not a failure of the scaler.
    log.info("stopped cleanly")
    return 0


def _local_redis(settings: Settings) -> LocalRedis | None:
    if parse_redis_url(settings.redis_url).kind != "single":
        return None  # a Sentinel or Cluster is never stood in for by a local one
    if answers(settings.redis_url):
        log.warning(
            "a Redis answers at %s: using it, not starting a local one (its data is read, "
            "and notify-keyspace-events is extended for the scaler's wake-ups)",
            urlsplit(settings.redis_url).netloc.rpartition("@")[2],
        )
        return None
    url = urlsplit(settings.redis_url)
    if url.hostname not in ("localhost", "127.0.0.1", "::1"):
        log.warning(
            "nothing answers at %s; not starting a local Redis for a remote URL", url.hostname
        )
        return None
    local = LocalRedis(url.port or 6379)
    local.start()
    log.warning(
        "nothing answered at %s: started a local redis-server on port %d "
        "(empty, not persisted; stopped when the scaler stops)",
        url.netloc,
        local.port,
    )
    return local


async def _serve(settings: Settings) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await ScalerServer(settings).run(stop)


if __name__ == "__main__":
    sys.exit(main())
