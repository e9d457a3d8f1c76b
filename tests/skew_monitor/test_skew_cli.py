"""`featurelib skew-report`: logs read from the flushed Parquet layout, the reference from the
model registry (training sample attachment, expectations built and attached), exit codes,
`--every`, and usage errors."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import skew_replay_cases as cases

import featurelib as fl
from featurelib.cli import main
from featurelib.repo import Repo
from featurelib.spec import dumps
from serving.model import Preprocessor
from serving.registry import ModelRegistry
from serving.train import fit_sklearn
from skew_monitor import history
from skew_monitor.schedule import run_every

TESTS = Path(__file__).resolve().parent
DEFINITIONS = f"""
import sys
sys.path.insert(0, {str(TESTS)!r})
from skew_replay_cases import definitions

user, purchases, profiles, checkout, profile, spend, basket, shop = definitions()
"""


def _repo_with_model(root: Path) -> cases.TinyRepo:
    """A tiny repo on disk (definitions file + data) and a registered model whose training
    sample is attached, as `featurelib train` leaves it."""
    tiny = cases.build_repo(root)
    (root / "definitions.py").write_text(DEFINITIONS)
    training = cases.spine(
        2000, datetime(2024, 1, 8, tzinfo=UTC), datetime(2024, 1, 20, tzinfo=UTC), seed=3
    )
    frame = cases.served(tiny, training).with_columns(
        event_timestamp=training["feature_time"], big_spender=pl.col("amount_sum_7d") > 300
    )
    preprocessor = Preprocessor.fit(frame, cases.FEATURES)
    model, params = fit_sklearn(
        frame, "big_spender", preprocessor, (tiny.service.name, tiny.service.version)
    )
    with ModelRegistry.open(repo_root=root) as registry:
        mv = registry.register(
            "shop_model",
            model,
            metrics={"auc": 0.9},
            params=params,
            fingerprint="f",
            code_version="test",
        )
        sample = io.BytesIO()
        frame.select("event_timestamp", *preprocessor.feature_names).write_parquet(sample)
        registry.attach(mv.name, mv.version, "training_sample.parquet", sample.getvalue())
    return tiny


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> cases.TinyRepo:
    monkeypatch.delenv("FEATURELIB_REGISTRY_URL", raising=False)
    return _repo_with_model(tmp_path / "repo")


def _log(tiny: cases.TinyRepo, *, skew: bool = False, hours_ago: float = 1.0) -> pl.DataFrame:
    requests = cases.spine(400, cases.LOG_START, cases.LOG_END)
    online = cases.served(tiny, requests)
    if skew:
        online = online.with_columns(amount_with_tax=requests["req_amount"] * 1.25)
    logs = cases.log_frame(
        requests,
        online,
        service_version=tiny.service.version,
        logged_at=datetime.now(UTC) - timedelta(hours=hours_ago),
    )
    cases.write_log_files(tiny.root, logs)
    return logs


def test_clean_run_against_the_model_reference(
    tiny: cases.TinyRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    _log(tiny)
    code = main(["skew-report", "--repo", str(tiny.root), "--service", "shop", "--since", "24h"])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert "skew report shop [OK]" in out
    assert "400 logged rows" in out
    assert "replaying 400 logged rows" in err  # progress goes to stderr
    reports = tiny.root / "data" / "skew_reports"
    (run_dir,) = [p for p in reports.iterdir() if p.is_dir()]
    report = json.loads((run_dir / "report.json").read_text())
    assert report["reference"]["kind"] == "model"
    assert (report["reference"]["model"], report["reference"]["version"]) == ("shop_model", 1)
    assert report["expectations"]["failed"] == 0
    assert report["expectations"]["evaluated"] > 0
    assert any("had no expectations.json" in n for n in report["notes"])
    with ModelRegistry.open(repo_root=tiny.root) as registry:
        stored = registry.attachment("shop_model", 1, "expectations.json")
    assert stored is not None
    assert json.loads(stored)["name"] == "shop_model-v1"
    # The second run uses the stored suite instead of building another one.
    assert (
        main(["skew-report", "--repo", str(tiny.root), "--service", "shop", "--since", "24h"]) == 0
    )
    assert len(history.load(reports, "shop")) == 2


def test_breach_exit_code_window_and_fail_on(
    tiny: cases.TinyRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    _log(tiny, skew=True)
    args = ["skew-report", "--repo", str(tiny.root), "--service", "shop"]
    assert main([*args, "--since", "24h"]) == 1
    out = capsys.readouterr().out
    assert "mismatch: amount_with_tax" in out
    # Only drift fails the run: the mismatch is reported but ignored for the exit code.
    assert main([*args, "--since", "24h", "--fail-on", "drift", "--reference", "offline"]) == 0
    report_dirs = sorted((tiny.root / "data" / "skew_reports").glob("*/report.json"))
    reports = [json.loads(p.read_text()) for p in report_dirs]
    ignored = next(r for r in reports if r["fail_on"] == ["drift"])
    assert ignored["breaches"] == []
    assert any(i.startswith("mismatch: amount_with_tax") for i in ignored["ignored_findings"])
    assert ignored["reference"]["kind"] == "offline"
    # A window with no rows: the logs were written an hour ago.
    now = datetime.now(UTC)
    window = ["--start", (now - timedelta(minutes=10)).isoformat(), "--end", now.isoformat()]
    assert main([*args, *window]) == 1
    assert "no_data: no logged rows in the window" in capsys.readouterr().out


def test_config_file_and_usage_errors(
    tiny: cases.TinyRepo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _log(tiny, skew=True)
    config = tmp_path / "skew.yaml"
    config.write_text(
        "replay:\n  features:\n    amount_with_tax: {rel_tolerance: 0.1}\n"
        "drift:\n  alpha: 0.001\nfail_on: [mismatch, drift]\n"
    )
    args = ["skew-report", "--repo", str(tiny.root), "--service", "shop", "--since", "24h"]
    assert main([*args, "--config", str(config)]) == 0  # 1.25 vs 1.2 is within 10%
    capsys.readouterr()
    config.write_text("replay:\n  tolerance: 1\n")
    assert main([*args, "--config", str(config)]) == 2
    assert "unknown replay settings ['tolerance']" in capsys.readouterr().err
    now = datetime.now(UTC).isoformat()
    assert main([*args[:-2], "--start", now, "--end", now]) == 2
    assert "is not before end" in capsys.readouterr().err
    assert main([*args, "--fail-on", "latency"]) == 2
    with pytest.raises(SystemExit) as exit_info:
        main([*args[:-2], "--since", "yesterday"])
    assert exit_info.value.code == 2


def test_every_runs_repeatedly(tiny: cases.TinyRepo, capsys: pytest.CaptureFixture[str]) -> None:
    _log(tiny)
    args = ["skew-report", "--repo", str(tiny.root), "--service", "shop", "--since", "24h"]
    assert main([*args, "--every", "1s", "--max-runs", "2"]) == 0
    err = capsys.readouterr().err
    assert "next run in" in err
    assert "stopped after 2 run(s)" in err
    assert len(history.load(tiny.root / "data" / "skew_reports", "shop")) == 2


def test_schedule_keeps_going_after_a_failure_and_stops_on_request() -> None:
    calls: list[int] = []
    stop = threading.Event()

    def job() -> int:
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("redis down")
        if len(calls) == 3:
            stop.set()
        return 1

    messages: list[str] = []
    result = run_every(0.01, job, stop=stop, log=messages.append)
    assert (result.runs, result.last_exit_code) == (3, 1)
    assert messages[0] == "run failed: RuntimeError: redis down"


def test_console_script_in_a_real_process(tiny: cases.TinyRepo) -> None:
    _log(tiny, skew=True)
    env = {k: v for k, v in os.environ.items() if k != "FEATURELIB_REGISTRY_URL"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "featurelib.cli",
            "skew-report",
            "--repo",
            str(tiny.root),
            "--service",
            "shop",
            "--since",
            "24h",
            "--out-dir",
            str(tiny.root / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert "mismatch: amount_with_tax" in done.stdout
    html = done.stdout.strip().splitlines()[-1].removeprefix("html: ")
    assert Path(html).parent.parent == tiny.root / "out"
    assert Path(html).read_text().startswith("<!DOCTYPE html>")


def test_rows_of_an_older_service_version_use_its_definition_from_the_registry(
    tiny: cases.TinyRepo, capsys: pytest.CaptureFixture[str]
) -> None:
    older = Repo.from_objects(cases.definitions(tax=1.25), root=tiny.root).service("shop")
    requests = cases.spine(300, cases.LOG_START, cases.LOG_END)
    online = fl.training_set(older, requests, repo=tiny.repo, timestamp_column="feature_time")
    logs = cases.log_frame(
        requests,
        online.select(cases.FEATURES),
        service_version=older.version,
        logged_at=datetime.now(UTC) - timedelta(hours=1),
    )
    cases.write_log_files(tiny.root, logs)
    args = ["skew-report", "--repo", str(tiny.root), "--service", "shop", "--since", "24h"]
    assert main(args) == 1  # no stored definition of the older version yet: replayed as now
    first = capsys.readouterr().out
    assert "mismatch: amount_with_tax" in first
    assert f"no stored definition of service version {older.version}" in first
    with ModelRegistry.open(repo_root=tiny.root) as registry:
        mv = registry.get("shop_model", 1)
        trained_on_older = dataclasses.replace(registry.load(mv), service_version=older.version)
        registry.register(
            "shop_model_old",
            trained_on_older,
            metrics={},
            params={},
            fingerprint="f",
            code_version="test",
        )
        # What `featurelib train` attaches: the spec of the service the model was trained on.
        registry.attach("shop_model_old", 1, "service_spec.json", older_spec(older))
    assert main(args) == 0, capsys.readouterr().out
    reports = sorted((tiny.root / "data" / "skew_reports").glob("*/report.json"))
    latest = max((json.loads(p.read_text()) for p in reports), key=lambda r: r["created_at"])
    assert latest["replay"]["replayed_with"] == {older.version: "logged version"}
    assert "replayed with their own stored definitions" in latest["replay"]["version_note"]


def older_spec(service: fl.FeatureService) -> bytes:
    return dumps(service).encode()
