"""Signal handlers set for a stretch of code and put back after it: in the main thread only,
the one thread where Python lets them be set and runs them."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

STOPS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGHUP)
"""Signals that ask a run to checkpoint and stop, besides Ctrl-C: a scheduler's SIGTERM before
its kill, SIGUSR1, which Slurm's --signal sends ahead of a job's time limit, and SIGHUP, sent
when the terminal of an ssh session closes (by default the last two kill a process, with
nothing saved). A SIGHUP that the process was told to ignore (``nohup``) stays ignored."""


@contextmanager
def handling(signums: Iterable[int], handler: Callable) -> Iterator[None]:
    """Handle ``signums`` with ``handler`` inside the block; elsewhere than in the main thread
    (a training thread of a caller's), leave the caller's handlers alone."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {
        s: signal.signal(s, handler)
        for s in signums
        if not (s == signal.SIGHUP and signal.getsignal(s) == signal.SIG_IGN)  # under nohup
    }
    try:
        yield
    finally:
        for s, h in previous.items():
            if h is not None:  # None: a handler set outside Python, which cannot be put back
                signal.signal(s, h)


PR_SET_PDEATHSIG = 1
SWEEP_PID = "DSTRL_SWEEP_PID"
"""Set for a sweep's runs: the sweep's pid, which ``stop_with_sweep`` watches."""


def stop_with_sweep() -> None:
    """A run started by a sweep (``DSTRL_SWEEP_PID`` set) is sent SIGTERM, so that it stops at
    a checkpoint, when the sweep dies: killed with SIGKILL, or by the out-of-memory killer, it
    left its runs training on as orphans, which its rerun then found in their directories. On
    Linux (the kernel signals a child whose parent dies); elsewhere the runs go on."""
    sweep = os.environ.pop(SWEEP_PID, None)
    if sweep is None or not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) == 0 and os.getppid() != int(sweep):
        os.kill(os.getpid(), signal.SIGTERM)  # the sweep died before this was set
