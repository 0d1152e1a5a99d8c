"""`python -m scaler.demo.guard PARENT_PID ARGV...`: exec ARGV, to die with PARENT_PID.

Every process the demo starts goes through this: it asks Linux to send it SIGTERM
when the process that started it dies (PR_SET_PDEATHSIG, kept across exec), then
becomes ARGV. So a demo killed outright (SIGKILL, a crash) still leaves nothing
behind; the orderly stop (process groups, SIGTERM, then SIGKILL) is in
`scaler.demo.supervise`. Imports stay minimal: this costs one interpreter start.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

_PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    parent, command = int(argv[0]), argv[1:]
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request above took effect
        return 1
    os.execvp(command[0], command)
    return 127  # not reached: exec replaces this process or raises


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
