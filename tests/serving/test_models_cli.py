"""`featurelib train` and `featurelib models ...` driven as a user would."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from featurelib.cli import main

DEFINITIONS = """
import featurelib as fl
from featurelib import col

req = fl.RequestSource("req", {"distance": fl.Float64, "hour": fl.Int64, "carrier": fl.String})
trip = fl.OnDemandView(
    "trip",
    [req],
    {
        "distance_km": col("distance") * 1.609,
        "evening": col("hour") >= 17,
        "airline": col("carrier"),
    },
)
delay_svc = fl.FeatureService("delay_svc", [trip])
"""


@pytest.fixture(scope="module")
def cli_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A request-fields-only repo with a spine, and two versions trained by `featurelib train`."""
    root = tmp_path_factory.mktemp("cli_repo")
    (root / "definitions.py").write_text(DEFINITIONS)
    rng = np.random.default_rng(11)
    rows = 1200
    hour = rng.integers(0, 24, rows)
    carrier = rng.choice(["AA", "UA", "XX"], rows)
    score = (hour >= 17) * 1.5 + (carrier == "XX") - 0.8
    start = datetime(2013, 3, 1, tzinfo=UTC)
    (root / "data").mkdir()
    pl.DataFrame(
        {
            "distance": rng.uniform(100, 3000, rows),
            "hour": hour,
            "carrier": carrier,
            "event_timestamp": [start + timedelta(hours=i) for i in range(rows)],
            "late": rng.random(rows) < 1 / (1 + np.exp(-2 * score)),
        }
    ).write_parquet(root / "data" / "spine.parquet")
    return root


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def trained_repo(cli_repo: Path) -> Path:
    code = main(
        [
            "train",
            "--repo",
            str(cli_repo),
            "--service",
            "delay_svc",
            "--spine",
            str(cli_repo / "data" / "spine.parquet"),
            "--label",
            "late",
            "--model",
            "delay",
            "--champion",
            "xgboost",
            "--actor",
            "alice",
        ]
    )
    assert code == 0
    return cli_repo


def test_train_then_list_and_show(
    trained_repo: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEATURELIB_REGISTRY_URL", raising=False)
    repo = str(trained_repo)
    assert (trained_repo / "data" / "models.db").is_file()  # the default registry
    code, out, _ = run(capsys, "models", "list", "--repo", repo)
    assert code == 0
    assert out.splitlines()[0].split() == ["model", "versions", "latest", "aliases"]
    assert out.splitlines()[1].split() == ["delay", "2", "2", "@champion=2"]
    code, out, _ = run(capsys, "models", "list", "--repo", repo, "--json")
    assert [(m["name"], m["aliases"]) for m in json.loads(out)] == [("delay", {"champion": 2})]
    code, out, _ = run(capsys, "models", "show", "delay", "--repo", repo)
    lines = [line.split()[:3] for line in out.splitlines()[1:]]
    assert lines == [["1", "sklearn", "-"], ["2", "xgboost", "@champion"]]
    code, out, _ = run(capsys, "models", "show", "delay@champion", "--repo", repo, "--json")
    shown = json.loads(out)
    assert (shown["version"], shown["flavor"], shown["service"]) == (2, "xgboost", "delay_svc")
    assert shown["feature_names"] == ["distance_km", "evening", "airline"]
    assert shown["aliases"] == ["champion"]
    assert shown["attachments"] == [
        "expectations.json",
        "service_spec.json",
        "training_sample.parquet",
    ]
    assert 0.5 < shown["metrics"]["auc"] <= 1.0
    assert shown["created_by"] == "alice"
    code, out, _ = run(capsys, "models", "show", "delay@1", "--repo", repo)
    assert "sklearn" in out
    assert "metric auc" in out


def test_promote_gates_rollback_and_history(
    trained_repo: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # A private copy of the registry so the other tests keep their view.
    url = f"sqlite:///{tmp_path / 'models.db'}"
    with (
        closing(sqlite3.connect(trained_repo / "data" / "models.db")) as source,
        closing(sqlite3.connect(tmp_path / "models.db")) as copy,
    ):
        source.backup(copy)
    common = ["--repo", str(trained_repo), "--registry", url]
    code, _, err = run(
        capsys, "models", "promote", "delay", "1", "--alias", "champion",
        "--min-metric", "auc>=0.999", "--min-metric", "brier<=0.0001", *common,
    )  # fmt: skip
    assert code == 2
    assert "promotion of delay/1 to @champion refused: 2 gate(s) failed" in err
    assert "metric auc:" in err
    assert "(required: >= 0.999)" in err
    assert "metric brier:" in err
    code, out, _ = run(capsys, "models", "history", "delay", "--json", *common)
    assert len(json.loads(out)) == 1  # the refused promotion changed nothing
    code, out, _ = run(
        capsys, "models", "promote", "delay", "1", "--alias", "champion", "--actor", "bob",
        "--reason", "baseline is steadier", "--min-metric", "auc>=0.5", *common,
    )  # fmt: skip
    assert code == 0
    assert out.strip() == "delay@champion: 2 -> 1 (all gates passed)"
    code, out, _ = run(capsys, "models", "rollback", "delay", "--actor", "carol", *common)
    assert (code, out.strip()) == (0, "delay@champion: 1 -> 2 (rolled back)")
    code, out, _ = run(
        capsys, "models", "promote", "delay", "1", "--alias", "shadow", "--force",
        "--max-p99-ms", "0.000001", "--actor", "dave", *common,
    )  # fmt: skip
    assert (code, out.strip()) == (0, "delay@shadow: - -> 1 (forced)")
    code, out, _ = run(capsys, "models", "history", "delay", "--json", *common)
    moves = [(m["alias"], m["from_version"], m["to_version"], m["actor"]) for m in json.loads(out)]
    assert moves == [
        ("champion", None, 2, "alice"),
        ("champion", 2, 1, "bob"),
        ("champion", 1, 2, "carol"),
        ("shadow", None, 1, "dave"),
    ]
    assert json.loads(out)[1]["reason"] == "baseline is steadier"
    assert [m["forced"] for m in json.loads(out)] == [False, False, False, True]
    code, out, _ = run(capsys, "models", "history", "delay", *common)
    table = out.splitlines()
    assert table[0].split() == ["#", "at", "alias", "from", "to", "actor", "reason"]
    assert table[4].split()[2:] == ["@shadow", "-", "1", "dave", "FORCED"]


def test_errors_say_how_to_fix(trained_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = str(trained_repo)
    code, _, err = run(capsys, "models", "show", "nope", "--repo", repo)
    assert code == 2
    assert "no registered model named 'nope'" in err
    assert "registered models: ['delay']" in err
    code, _, err = run(capsys, "models", "show", "delay@shadowy", "--repo", repo)
    assert code == 2
    assert "no alias 'shadowy'" in err
    assert "featurelib models promote delay VERSION --alias shadowy" in err
    code, _, err = run(capsys, "models", "rollback", "delay", "--alias", "champion", "--repo", repo)
    assert code == 2
    assert "no earlier version to return to" in err
    code, _, err = run(
        capsys, "models", "promote", "delay", "1", "--min-metric", "auc", "--repo", repo
    )
    assert (code, "write METRIC OP VALUE" in err) == (2, True)
