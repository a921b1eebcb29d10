"""`dstrl` and `python -m dstrl`: the command's entry, which answers Ctrl-C and SIGTERM with one
line even while its modules import (torch, Gymnasium, MuJoCo: seconds on a cold start)."""

from __future__ import annotations

import os
import signal
import sys
from contextlib import suppress


def _stop_while_starting(signum, frame) -> None:
    """Ends the process at once: an exception raised inside an extension's import can be
    swallowed by it (the run would go on) or reported as an ImportError."""
    with suppress(Exception):
        print("dstrl: stopped while starting; nothing was done", file=sys.stderr, flush=True)
    os._exit(130)


def main() -> int:
    starting = [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP]
    if signal.getsignal(signal.SIGHUP) == signal.SIG_IGN:  # nohup: it stays ignored
        starting.remove(signal.SIGHUP)
    previous = {signum: signal.signal(signum, _stop_while_starting) for signum in starting}
    from dstrl.cli import main as run

    for signum, handler in previous.items():
        signal.signal(signum, handler)
    try:
        return run()
    except KeyboardInterrupt:  # while the command line is read, before a command handles it
        print("dstrl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
