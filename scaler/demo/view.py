"""The live terminal view: one screen redrawn in place with plain ANSI codes.

On a terminal the screen is redrawn (cursor home, clear) twice a second; when the
output is not a terminal (CI, a pipe, `make demo | tee`) a one-line status is
printed every few seconds instead.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from scaler.demo.timeline import Sample

_BARS = " ▁▂▃▄▅▆▇█"
_HOME_CLEAR = "\x1b[H\x1b[J"
_BOLD, _DIM, _GREEN, _YELLOW, _RESET = "\x1b[1m", "\x1b[2m", "\x1b[32m", "\x1b[33m", "\x1b[0m"


def sparkline(values: list[float], top: float) -> str:
    if top <= 0:
        return " " * len(values)
    return "".join(_BARS[min(8, round(8 * v / top))] for v in values)


class TerminalView:
    def __init__(self, header: str, out: TextIO = sys.stdout, width: int = 60) -> None:
        self._header = header
        self._out = out
        self._tty = out.isatty()
        self._width = width
        self._last_line_at = -1e9

    def show(self, samples: list[Sample], phase: str) -> None:
        if not samples:
            return
        s = samples[-1]
        if not self._tty:
            if time.monotonic() - self._last_line_at >= 5:
                self._last_line_at = time.monotonic()
                self._out.write(f"{_line(s, phase)}\n")
                self._out.flush()
            return
        self._out.write(_HOME_CLEAR + self.screen(samples, phase))
        self._out.flush()

    def screen(self, samples: list[Sample], phase: str) -> str:
        s = samples[-1]
        recent = samples[-self._width :]
        top = max(max(x.demand for x in recent), max(x.metric for x in recent), 1)
        top_replicas = max(max(x.desired for x in recent), 1)
        active = f"{_GREEN}yes{_RESET}" if s.active else f"{_DIM}no{_RESET}"
        rows = [
            f"{_BOLD}{self._header}{_RESET}",
            f"t = {s.t_s:6.1f} s   {phase}   {_DIM}Ctrl-C stops everything{_RESET}",
            "",
            f"demand     {s.demand:5d}   gateway queue {s.queue:4d} + in flight in the workers "
            f"{s.inflight:4d}",
            f"metric     {s.metric:7.1f} (GetMetrics: max demand over scaleDownDelaySeconds)",
            f"active     {active}      last decision: {_YELLOW}{s.reason or '-'}{_RESET}",
            f"replicas   {s.desired:5d}   ready {s.ready}  starting {s.starting}"
            f"  draining {s.draining}",
            f"requests   sent {s.sent}  answered {s.answered}  errors {s.errors}"
            f"   {_DIM}(client -> gateway -> Redis streams -> workers -> stand-ins){_RESET}",
            "",
            f"demand   |{sparkline([x.demand for x in recent], top)}| {top:g}",
            f"metric   |{sparkline([x.metric for x in recent], top)}|",
            f"replicas |{sparkline([float(x.desired) for x in recent], top_replicas)}| "
            f"{top_replicas}",
            f"ready    |{sparkline([float(x.ready) for x in recent], top_replicas)}|",
        ]
        return "\n".join(rows) + "\n"


def _line(s: Sample, phase: str) -> str:
    return (
        f"t={s.t_s:6.1f}s {phase}: demand {s.demand} (queue {s.queue}), metric {s.metric:.1f}, "
        f"active {s.active}, replicas {s.desired} (ready {s.ready}, starting {s.starting}, "
        f"draining {s.draining}), {s.reason or '-'}, answered {s.answered}/{s.sent}, "
        f"errors {s.errors}"
    )
