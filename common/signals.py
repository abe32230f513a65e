"""The stop rules of every long command (a training run, a parallel study): SIGTERM (a cluster's
pre-emption, `kill`) or a first Ctrl-C asks it to stop gracefully; a second Ctrl-C stops at once."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """While entered (in the main thread), records the stop signal received in `signum`, calling
    `on_request(signum)` at the first one; a second Ctrl-C calls `on_second()` and raises KeyboardInterrupt."""

    def __init__(self, on_request: Callable[[int], None] = lambda signum: None,
                 on_second: Callable[[], None] = lambda: None):
        self.on_request, self.on_second = on_request, on_second
        self.signum: int | None = None
        self.previous: dict[int, object] = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            self.previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self.signum == signal.SIGINT:
            self.on_second()
            raise KeyboardInterrupt
        if self.signum is None:
            self.on_request(signum)
        self.signum = signum
