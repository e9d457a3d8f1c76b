"""CLI plumbing shared by every command: time arguments and exit codes."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest

from featurelib import cli


def test_since_accepts_durations_and_times() -> None:
    before = datetime.now(UTC)
    since = cli.since_arg("1h")
    assert before - timedelta(hours=1, seconds=5) < since <= datetime.now(UTC) - timedelta(hours=1)
    assert cli.since_arg("2013-06-01T00:00:00") == datetime(2013, 6, 1, tzinfo=UTC)
    assert cli.since_arg("2013-06-01T05:30:00+05:30") == datetime(2013, 6, 1, tzinfo=UTC)
    with pytest.raises(argparse.ArgumentTypeError, match="cannot read time 'soon'"):
        cli.since_arg("soon")


def test_an_unexpected_exception_exits_3_with_a_one_line_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(_: argparse.Namespace) -> int:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(cli, "_cmd_list", boom)  # bound when main() builds the parser
    monkeypatch.delenv("FEATURELIB_DEBUG", raising=False)
    assert cli.main(["list"]) == 3
    err = capsys.readouterr().err
    assert err.startswith("error: unexpected ZeroDivisionError: division by zero")
    assert "FEATURELIB_DEBUG=1" in err
    monkeypatch.setenv("FEATURELIB_DEBUG", "1")
    with pytest.raises(ZeroDivisionError):
        cli.main(["list"])
