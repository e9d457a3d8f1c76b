"""The run history survives a crashed writer: a torn last line is skipped, and the next run
appended after it is kept."""

from __future__ import annotations

from pathlib import Path

from skew_monitor.history import append, history_path, load


def test_torn_line_is_skipped_and_does_not_swallow_the_next_run(tmp_path: Path) -> None:
    append(tmp_path, {"service": "s", "run_id": "r1"})
    with history_path(tmp_path).open("a") as handle:
        handle.write('{"service": "s", "run_id": "r2", "rows"')  # the writer crashed here
    append(tmp_path, {"service": "s", "run_id": "r3"})
    assert [run["run_id"] for run in load(tmp_path, "s")] == ["r1", "r3"]
