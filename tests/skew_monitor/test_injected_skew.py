"""Injected skew, each detected and attributed to the right feature (issue 5): the whole run
(replay through the real offline engine, drift against a training sample, report files) on a
tiny repo, with logged online values produced the way each fault would produce them."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import skew_replay_cases as cases

from skew_monitor.run import RunConfig, RunOutcome, run_once

TRAIN_START = datetime(2024, 1, 8, tzinfo=UTC)
TRAIN_END = datetime(2024, 1, 20, tzinfo=UTC)
PROFILE_REFRESH = datetime(2024, 1, 20, 1, tzinfo=UTC)  # the last profile rewrite


@dataclass(frozen=True)
class Setup:
    """The tiny repo, its training sample (the drift reference) and the logged requests."""

    tiny: cases.TinyRepo
    reference: Path
    requests: pl.DataFrame
    base: Path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    base = tmp_path_factory.mktemp("skew")
    tiny = cases.build_repo(base / "repo")
    training = cases.spine(2000, TRAIN_START, TRAIN_END, seed=3)
    reference = base / "training_sample.parquet"
    cases.served(tiny, training).write_parquet(reference)
    return Setup(tiny, reference, cases.spine(500, cases.LOG_START, cases.LOG_END), base)


def run(setup: Setup, tiny: cases.TinyRepo, online: pl.DataFrame, name: str) -> RunOutcome:
    """Log `online` as served values of the requests and run the monitor against `tiny`."""
    logs = cases.log_frame(setup.requests, online, service_version=tiny.service.version)
    config = RunConfig(
        service="shop", reference=str(setup.reference), out_dir=setup.base / "reports" / name
    )
    return run_once(tiny.root, config, logs=logs, repo=tiny.repo)


def mismatching(outcome: RunOutcome) -> set[str]:
    return {f["feature"] for f in outcome.report["features"] if f["replay_breached"]}


def drifted(outcome: RunOutcome) -> set[str]:
    return {f["feature"] for f in outcome.report["features"] if f["drifted"]}


def feature(outcome: RunOutcome, name: str) -> dict[str, Any]:
    return next(f for f in outcome.report["features"] if f["feature"] == name)


def test_clean_logs_have_no_mismatch_and_no_drift(setup: Setup) -> None:
    outcome = run(setup, setup.tiny, cases.served(setup.tiny, setup.requests), "clean")
    assert mismatching(outcome) == set()
    assert drifted(outcome) == set()
    assert all(f["mismatches"] == 0 for f in outcome.report["features"])
    assert [b for b in outcome.report["breaches"] if not b.startswith("expectations")] == []


def test_serving_transform_with_a_changed_constant(setup: Setup) -> None:
    # The serving side's copy of the on-demand transform uses 1.25 instead of 1.2.
    online = cases.served(setup.tiny, setup.requests).with_columns(
        amount_with_tax=setup.requests["req_amount"] * 1.25
    )
    outcome = run(setup, setup.tiny, online, "constant")
    assert mismatching(outcome) == {"amount_with_tax"}
    tax = feature(outcome, "amount_with_tax")
    assert tax["mismatches"] == 500
    assert tax["smape"] == pytest.approx(0.05 / 1.225)
    assert outcome.exit_code == 1
    assert any(b.startswith("mismatch: amount_with_tax") for b in outcome.report["breaches"])


def test_stale_materialization(setup: Setup, tmp_path: Path) -> None:
    # Materialization stopped before the last profile rewrite: online serves the older rows.
    stale_data = setup.tiny.profiles.filter(pl.col("ts") < PROFILE_REFRESH)
    stale = setup.tiny.variant(tmp_path / "stale", profiles=stale_data)
    outcome = run(setup, setup.tiny, cases.served(stale, setup.requests), "stale")
    assert mismatching(outcome) == {"tier", "score"}
    score = feature(outcome, "score")
    assert score["mismatches"] == 500  # continuous scores never repeat
    assert feature(outcome, "tier")["match_rate"] < 0.6  # 3 tiers: ~1/3 agree by chance


def test_unit_change_in_a_pushed_stream(setup: Setup, tmp_path: Path) -> None:
    # Events pushed since Jan 20 carry seconds instead of minutes (x60).
    pushed = setup.tiny.purchases.with_columns(
        minutes=pl.when(pl.col("ts") >= TRAIN_END)
        .then(pl.col("minutes") * 60)
        .otherwise(pl.col("minutes"))
    )
    online_repo = setup.tiny.variant(tmp_path / "seconds", purchases=pushed)
    outcome = run(setup, setup.tiny, cases.served(online_repo, setup.requests), "units")
    assert mismatching(outcome) == {"session_minutes_7d"}
    assert drifted(outcome) == {"session_minutes_7d"}
    minutes = feature(outcome, "session_minutes_7d")
    assert minutes["psi"] > 1.0
    assert minutes["diff_p50"] > 10  # minutes: the gap is the seconds the online side added


def test_category_that_appears_only_online(setup: Setup, tmp_path: Path) -> None:
    # Since the last profile rewrite a quarter of the users are "platinum", a tier the
    # training data never had; online and offline agree (both read the new rows).
    profiles = (
        setup.tiny.profiles.with_row_index("i")
        .with_columns(
            tier=pl.when((pl.col("ts") >= PROFILE_REFRESH) & (pl.col("i") % 4 == 0))
            .then(pl.lit("platinum"))
            .otherwise(pl.col("tier"))
        )
        .drop("i")
    )
    current = setup.tiny.variant(tmp_path / "platinum", profiles=profiles)
    outcome = run(setup, current, cases.served(current, setup.requests), "category")
    assert mismatching(outcome) == set()
    assert drifted(outcome) == {"tier"}
    tier = feature(outcome, "tier")
    assert "platinum" in tier["histogram"]["categories"]
    assert tier["linf"] > 0.15
    assert outcome.exit_code == 1


def test_shifted_numeric_distribution(setup: Setup, tmp_path: Path) -> None:
    # The last profile rewrite scores users 25 points higher (2.5 standard deviations).
    profiles = setup.tiny.profiles.with_columns(
        score=pl.when(pl.col("ts") >= PROFILE_REFRESH)
        .then(pl.col("score") + 25)
        .otherwise(pl.col("score"))
    )
    current = setup.tiny.variant(tmp_path / "shifted", profiles=profiles)
    outcome = run(setup, current, cases.served(current, setup.requests), "shift")
    assert mismatching(outcome) == set()
    assert drifted(outcome) == {"score"}
    score = feature(outcome, "score")
    assert score["wasserstein_norm"] == pytest.approx(2.5, abs=0.5)
    assert score["ks_statistic"] > 0.7


def test_rows_served_with_defaults_during_an_outage_are_left_out(setup: Setup) -> None:
    """Rows the service answered with default values (online store down, logged with
    degraded = true) are neither mismatches nor drift: counted in a note, left out."""
    served = cases.served(setup.tiny, setup.requests)
    outage = pl.Series([i % 5 == 0 for i in range(setup.requests.height)])
    online = served.with_columns(  # what the defaults mode served: every feature null
        [pl.when(outage).then(None).otherwise(pl.col(c)).alias(c) for c in served.columns]
    )
    logs = cases.log_frame(setup.requests, online, service_version=setup.tiny.service.version)
    logs = logs.with_columns(degraded=outage)
    config = RunConfig(
        service="shop", reference=str(setup.reference), out_dir=setup.base / "reports" / "outage"
    )
    outcome = run_once(setup.tiny.root, config, logs=logs, repo=setup.tiny.repo)
    assert mismatching(outcome) == set()
    assert drifted(outcome) == set()
    assert outcome.report["rows"] == 400
    assert any("100 rows served with default values" in n for n in outcome.report["notes"])
