"""Ctrl-C at a safe point. An interrupt that lands inside a write to the study's storage or the
tracking store can leave a sqlite transaction half done: the next writer then waits out the busy
timeout (60 s) and the trial may never be marked. While a run trains in one process (``held``),
the first Ctrl-C is held until the loop reaches the next batch boundary (``check``), where it
raises ``KeyboardInterrupt`` as Python would have; a second Ctrl-C raises at once, for a check
that hangs. Data-parallel ranks keep Python's own handling: each would reach its next boundary
at another step of a collective, and the launcher ends the group anyway.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from typing import Iterator


class _Hold:
    active = False  # a ``held`` block is open
    pending = False  # a Ctrl-C came and was not raised yet


_HOLD = _Hold()


def _hold(signum, frame) -> None:
    if _HOLD.pending:
        _HOLD.pending = False
        raise KeyboardInterrupt
    _HOLD.pending = True
    print("ganstop: Ctrl-C: stopping at the next batch (press it again to stop at once)", file=sys.stderr, flush=True)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """Hold Ctrl-C until ``check`` (or the end of the block, where a held one is raised, in place
    of any exception on its way out: the user asked to stop). A no-op outside the main thread,
    when SIGINT is not Python's default (ignored, or the caller's own handler) and inside another
    ``held`` block."""
    if (_HOLD.active or threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    previous = signal.signal(signal.SIGINT, _hold)
    _HOLD.active, _HOLD.pending = True, False
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _HOLD.active = False
        if _HOLD.pending:
            _HOLD.pending = False
            raise KeyboardInterrupt


def check() -> None:
    """Raise a held Ctrl-C: called where stopping leaves nothing half written."""
    if _HOLD.pending:
        _HOLD.pending = False
        raise KeyboardInterrupt
