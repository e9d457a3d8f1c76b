"""`--every`: run the report on a fixed cadence until stopped (SIGINT/SIGTERM end it cleanly).

Runs are aligned to the start time (t0, t0 + every, t0 + 2*every, ...), not to the end of the
previous run, so a slow run does not make the schedule drift; a run that overruns its slot is
followed immediately by the next one (slots are never run twice to "catch up"). A failing run is
reported and the loop goes on: a monitor must not die of one bad night.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType


@dataclass(frozen=True)
class ScheduleResult:
    """How many runs happened, and the exit code of the last one (0 when none ran)."""

    runs: int
    last_exit_code: int


def run_every(
    every_s: float,
    job: Callable[[], int],
    *,
    max_runs: int | None = None,
    stop: threading.Event | None = None,
    log: Callable[[str], None] = lambda _msg: None,
    clock: Callable[[], float] = time.monotonic,
) -> ScheduleResult:
    """Call `job` every `every_s` seconds until `stop` is set, a signal arrives or `max_runs`."""
    if every_s <= 0:
        raise ValueError(f"every_s must be > 0, got {every_s}")
    stop = stop or threading.Event()
    previous = _install_signal_handlers(stop)
    runs, code = 0, 0
    start = clock()
    try:
        while not stop.is_set() and (max_runs is None or runs < max_runs):
            try:
                code = job()
            except Exception as exc:  # keep monitoring; the failure is visible in the log
                log(f"run failed: {type(exc).__name__}: {exc}")
                code = 2
            runs += 1
            if max_runs is not None and runs >= max_runs:
                break
            elapsed = clock() - start
            next_slot = (int(elapsed // every_s) + 1) * every_s
            wait = next_slot - elapsed
            log(f"next run in {wait:.0f}s (exit code of this run: {code})")
            stop.wait(wait)
    finally:
        _restore_signal_handlers(previous)
    return ScheduleResult(runs, code)


_Handler = Callable[[int, FrameType | None], object] | int | signal.Handlers | None


def _install_signal_handlers(stop: threading.Event) -> dict[int, _Handler]:
    if threading.current_thread() is not threading.main_thread():
        return {}  # signal handlers can only be set from the main thread

    def handler(_signum: int, _frame: FrameType | None) -> None:
        stop.set()

    previous: dict[int, _Handler] = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous[sig] = signal.getsignal(sig)
        signal.signal(sig, handler)
    return previous


def _restore_signal_handlers(previous: dict[int, _Handler]) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)  # type: ignore[arg-type]
