"""End to end as a user runs the demo: a window of real flights replayed through a real
`featurelib serve` process (REST + gRPC), its feature log flushed on shutdown, batch scoring of
the logged rows, then `featurelib skew-report` on that traffic.

Checks the issue's two consistency promises on logs produced by the real scoring service:
online predictions of logged requests equal batch-scoring predictions of the same (keys, time)
rows, and the skew monitor's clean run finds zero mismatches and no drift alert.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from serve_support import MODEL, SERVICE, registry_copy

from featurelib.online.testing import RedisProcess

FEATURELIB = Path(sys.executable).with_name("featurelib")
START = datetime(2013, 5, 31, 12, 0, tzinfo=UTC)
END = datetime(2013, 5, 31, 15, 0, tzinfo=UTC)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def replay_redis() -> Iterator[RedisProcess]:
    with RedisProcess() as server:
        yield server


@pytest.fixture(scope="module")
def replayed(
    copy_demo_repo: Any,
    trained_registry: Path,
    replay_redis: RedisProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, str, dict[str, object]]:
    """A private repo copy whose store holds everything up to START, then the replay."""
    from featurelib.online.api import materialize_range, open_store
    from featurelib.repo import Repo

    root = copy_demo_repo(tmp_path_factory.mktemp("demo_replay"))  # no other test's logs
    registry = registry_copy(trained_registry, root)
    repo = Repo.load(root)
    materialize_range(open_store(repo, replay_redis.url), repo, EPOCH, START)
    done = run(
        "demo-serve", "--repo", str(root), "--start", START.isoformat(), "--end", END.isoformat(),
        "--step", "30m", "--model", MODEL, "--registry", registry,
        "--redis-url", replay_redis.url,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    return root, registry, summary


def run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FEATURELIB_", "REDIS"))}
    return subprocess.run(
        [str(FEATURELIB), *args], capture_output=True, text=True, timeout=600, env=env
    )


def test_served_traffic_is_logged_and_equals_batch_scoring(
    replayed: tuple[Path, str, dict[str, object]],
) -> None:
    root, _, summary = replayed
    spine = pl.read_parquet(root / "data" / "spine.parquet")
    expected = spine.filter(
        (pl.col("event_timestamp") > START) & (pl.col("event_timestamp") <= END)
    ).height
    assert expected > 50
    assert summary["requests"] == expected
    assert summary["by_transport"] == {"rest": (expected + 1) // 2, "grpc": expected // 2}
    assert summary["logged_rows"] == expected
    assert summary["batch_compared"] == expected
    assert summary["batch_max_abs_diff"] == 0.0
    from serving.feature_log import read_logs

    logs = read_logs(root, SERVICE)
    assert logs.height == expected
    assert logs["model_version"].unique().to_list() == [1]  # default routing: the champion
    # Each request was scored at the end of its 30-minute step.
    stamps = logs["feature_time"].dt.minute().unique().sort().to_list()
    assert set(stamps) <= {0, 30}


def test_skew_report_on_served_traffic_is_clean(
    replayed: tuple[Path, str, dict[str, object]],
) -> None:
    root, registry, _ = replayed
    out = root / "data" / "skew_reports"
    done = run(
        "skew-report", "--repo", str(root), "--service", SERVICE, "--since", "24h",
        "--reference", "offline", "--registry", registry, "--out-dir", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    html = Path(done.stdout.strip().splitlines()[-1].split()[-1])
    assert html.is_file()
    report = json.loads((html.parent / "report.json").read_text())
    features = report["features"]
    assert len(features) == 63
    assert report["breaches"] == []
    assert [f["feature"] for f in features if f["mismatches"]] == []
    assert all(f["rows_compared"] == report["rows"] > 50 for f in features)
    assert [f["feature"] for f in features if f["drifted"]] == []
    assert report["notes"] == [], report["notes"]  # e.g. no metadata column taken for a feature
