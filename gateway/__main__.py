"""Command line: `python -m gateway` holds and relays inference requests until SIGTERM.

Reads the configuration (gateway.config; a bad one exits 2 naming the setting), then runs
the gateway (gateway.app) until SIGTERM or SIGINT, and shuts it down gracefully: readiness
fails first, requests are taken for SHUTDOWN_DELAY_SECONDS more, those in flight get
SHUTDOWN_GRACE_SECONDS, the live key is removed, exit 0.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys

from prometheus_client import CollectorRegistry

from gateway.app import Gateway
from gateway.config import ConfigError, GatewayConfig, load_config

log = logging.getLogger("gateway")


def main(argv: list[str] | None = None) -> int:
    try:
        config = load_config(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as exc:
        print(f"gateway: bad configuration: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=getattr(logging, config.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    asyncio.run(serve(config))
    return 0


async def serve(config: GatewayConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    gateway = Gateway(config, CollectorRegistry())
    try:
        await gateway.start()
    except OSError as exc:  # a port taken: say which, not a traceback
        await gateway.link.aclose()
        raise SystemExit(f"gateway: cannot listen: {exc.strerror or exc}") from None
    log.info(
        "gateway %s (incarnation %s) serving %s on %s:%d, /metrics on %s:%d; Redis %s",
        config.name,
        gateway.incarnation,
        ", ".join(t.label for t in config.targets),
        config.bind_address,
        gateway.port,
        config.bind_address,
        gateway.metrics_port,
        gateway.link.describe(),
    )
    await stop.wait()
    log.info("SIGTERM: shutting down")
    await gateway.stop()
    log.info("stopped")


if __name__ == "__main__":
    sys.exit(main())
