"""Serving reads definitions from the registry after `feast apply`, refreshed in the background."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import featurelib as fl
from featurelib.online.live import LiveDefinitions, load_serving_repo

FeastCli = Callable[..., Any]


def test_serving_uses_python_files_before_apply(fresh_repo: Path) -> None:
    repo = load_serving_repo(fresh_repo)
    assert repo.service("flight_delay") == fl.Repo.load(fresh_repo).service("flight_delay")


def test_live_definitions_follow_feast_apply(
    clone_applied: Callable[[], Path], feast_cli: FeastCli
) -> None:
    repo_dir = clone_applied()
    definitions = repo_dir / "definitions.py"
    with LiveDefinitions(repo_dir, interval=0.2) as live:
        before = live.repo.view("route_delays")
        assert live.reloads == 0
        # Editing the Python file alone changes nothing: the registry is the source of truth.
        definitions.write_text(
            definitions.read_text().replace(
                'fl.max("arr_delay").windows("1d", "7d", name="route_arr_delay_max")',
                'fl.max("arr_delay").windows("1d", "14d", name="route_arr_delay_max")',
            )
        )
        time.sleep(0.6)
        assert live.repo.view("route_delays") == before
        run = feast_cli(repo_dir, "apply")
        assert run.returncode == 0, run.stdout + run.stderr
        deadline = time.monotonic() + 15
        while live.reloads == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        after = live.repo.view("route_delays")
        assert live.reloads >= 1
        assert "route_arr_delay_max_14d" in after.feature_names()
        assert after.version != before.version
