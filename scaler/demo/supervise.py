"""Child processes of the demo: started guarded, stopped in order, never left behind.

Each child starts in its own process group (a terminal's Ctrl-C reaches the
demo alone, which then stops everything in order) through `scaler.demo.guard`
(it also dies with the thread that started it: start children from the main
thread). `stop` sends SIGTERM to the child's whole group, waits, then SIGKILLs
it; `Supervisor.close` does that for every child still known, last started
first. Every child carries `DEMO_RUN_ENV` in its environment, inherited by its
own children, so a test can look for any process of a run that survived it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

DEMO_RUN_ENV = "LLM_SCALER_DEMO_RUN"


def guarded(argv: Sequence[str]) -> list[str]:
    """`argv`, run through the guard so that it dies with this process's current thread."""
    return [sys.executable, "-m", "scaler.demo.guard", str(os.getpid()), *argv]


class Child:
    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        log_path: Path | None,
        own_group: bool = True,
        layer: int = 0,
    ) -> None:
        self.name = name
        self.layer = layer
        self._log: IO[bytes] | None = log_path.open("ab") if log_path is not None else None
        out = self._log  # None: this process's own output
        self.process = subprocess.Popen(
            guarded(argv),
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=own_group,
        )
        self._own_group = own_group
        self.pid = self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if self._own_group:
                os.killpg(self.pid, sig)  # the child and whatever it started itself
            else:
                os.kill(self.pid, sig)

    def stop(self, grace_s: float) -> None:
        """SIGTERM to the group, up to `grace_s` to exit, then SIGKILL; always reaped."""
        self.signal(signal.SIGTERM)
        self.wait_or_kill(grace_s)

    def wait_or_kill(self, grace_s: float) -> None:
        try:
            self.process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            self.process.wait()
        # Whatever the child left in its group (it exited first) goes too.
        if self._own_group:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None


class Supervisor:
    """Every child of one demo run."""

    def __init__(self, log_dir: Path, env: Mapping[str, str]) -> None:
        self.log_dir = log_dir
        self.env = dict(env)
        self.children: list[Child] = []

    def start(
        self,
        name: str,
        argv: Sequence[str],
        extra_env: Mapping[str, str] | None = None,
        layer: int = 0,
    ) -> Child:
        """`layer`: what depends on what; higher layers are stopped first (pods, then
        scalers, then Redis, so each can still say goodbye to the next)."""
        env = {**self.env, **(extra_env or {})}
        child = Child(name, argv, env, self.log_dir / f"{name}.log", layer=layer)
        self.children.append(child)
        return child

    def forget(self, child: Child) -> None:
        if child in self.children:
            self.children.remove(child)

    def close(self, grace_s: float = 10.0) -> None:
        """Layer by layer, highest first: SIGTERM to each group of the layer at once (they
        stop in parallel), then wait up to `grace_s` and SIGKILL what is left."""
        for layer in sorted({c.layer for c in self.children}, reverse=True):
            children = [c for c in self.children if c.layer == layer]
            for child in children:
                child.signal(signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            for child in children:
                child.wait_or_kill(max(0.0, deadline - time.monotonic()))
                self.forget(child)
