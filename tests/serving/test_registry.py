"""Model registry on SQLite and PostgreSQL: versions, aliases, history, gates, rollback."""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import sqlalchemy as sa

from serving.errors import (
    ArtifactIntegrityError,
    GatesFailedError,
    ModelNotFoundError,
    PromotionRefusedError,
    RegistryError,
)
from serving.gates import TRAINING_SAMPLE, GateConfig, parse_threshold
from serving.model import Preprocessor, TrainedModel
from serving.registry import ModelRegistry
from serving.train import fit_sklearn, fit_xgboost

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

DEFINITIONS = """
import featurelib as fl
from featurelib import col

req = fl.RequestSource("req", {"distance": fl.Float64, "hour": fl.Int64, "carrier": fl.String})
trip = fl.OnDemandView(
    "trip",
    [req],
    {
        "distance_km": col("distance") * 1.609,
        "night": col("hour") < 6,
        "hour_of_day": col("hour"),
        "airline": col("carrier"),
    },
)
delay_svc = fl.FeatureService("delay_svc", [trip])
"""


def write_tiny_repo(root: Path, definitions: str = DEFINITIONS) -> Path:
    """A feature repo whose service needs only request fields (no data files)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "definitions.py").write_text(definitions)
    return root


def tiny_spine(rows: int = 1500, seed: int = 7) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    hour = rng.integers(0, 24, rows)
    carrier = rng.choice(["AA", "UA", "XX"], rows)
    distance = rng.uniform(100, 3000, rows)
    score = (hour >= 17) * 1.5 + (carrier == "XX") * 1.0 + distance / 3000 - 1.2
    label = rng.random(rows) < 1 / (1 + np.exp(-2 * score))
    start = datetime(2013, 1, 1, tzinfo=UTC)
    return pl.DataFrame(
        {
            "distance": distance,
            "hour": hour,
            "carrier": carrier,
            "event_timestamp": [start + timedelta(minutes=30 * i) for i in range(rows)],
            "y": label,
        }
    )


@pytest.fixture(scope="module")
def tiny_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_repo(tmp_path_factory.mktemp("tiny_repo"))


@pytest.fixture(scope="module")
def tiny_models(tiny_repo: Path) -> dict[str, TrainedModel]:
    """An XGBoost and a scikit-learn model trained on the tiny repo's service."""
    import featurelib as fl
    from featurelib.repo import Repo

    service = Repo.load(tiny_repo).service("delay_svc")
    frame = fl.training_set(service, tiny_spine(), repo=tiny_repo)
    prep = Preprocessor.fit(frame, service.output_names())
    signature = (service.name, service.version)
    xgb_model, _ = fit_xgboost(frame, "y", prep, signature, {"num_boost_round": 20})
    sk_model, _ = fit_sklearn(frame, "y", prep, signature)
    return {"xgboost": xgb_model, "sklearn": sk_model}


@pytest.fixture(scope="module")
def postgres_available() -> bool:
    try:
        engine = sa.create_engine(PG_URL)
        with engine.connect() as conn:
            conn.execute(sa.text("select 1"))
        engine.dispose()
        return True
    except Exception:
        return False


@pytest.fixture(params=["sqlite", "postgresql"])
def registry_url(
    request: pytest.FixtureRequest, tmp_path: Path, postgres_available: bool
) -> Iterator[str]:
    """A fresh, empty registry database: a SQLite file, or a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'models.db'}"
        return
    if not postgres_available:
        pytest.skip(f"PostgreSQL is not reachable at {PG_URL}")
    schema = f"registry_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{PG_URL}?options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def registry(registry_url: str, tiny_repo: Path) -> Iterator[ModelRegistry]:
    with ModelRegistry.open(registry_url, repo_root=tiny_repo) as reg:
        yield reg


def register(
    registry: ModelRegistry, model: TrainedModel, auc: float = 0.8, name: str = "delay"
) -> int:
    mv = registry.register(
        name,
        model,
        metrics={"auc": auc, "log_loss": 0.5},
        params={"max_depth": 6, "split_time": datetime(2013, 1, 20, tzinfo=UTC)},
        fingerprint="sha256:abc",
        code_version="deadbeef",
        actor="alice",
    )
    return mv.version


def snapshot(registry: ModelRegistry, name: str = "delay") -> tuple[object, ...]:
    return (registry.aliases(name), registry.history(name), registry.change_counter())


def test_versions_are_numbered_immutable_and_carry_lineage(
    registry: ModelRegistry, tiny_models: dict[str, TrainedModel]
) -> None:
    first = register(registry, tiny_models["sklearn"], auc=0.7)
    second = register(registry, tiny_models["xgboost"], auc=0.8)
    assert (first, second) == (1, 2)
    v1 = registry.get("delay", 1)
    assert v1.flavor == "sklearn"
    assert (v1.service, v1.service_version) == ("delay_svc", tiny_models["sklearn"].service_version)
    assert v1.feature_names == ("distance_km", "night", "hour_of_day", "airline")
    assert v1.metrics == {"auc": 0.7, "log_loss": 0.5}
    assert v1.params == {"max_depth": 6, "split_time": "2013-01-20 00:00:00+00:00"}
    assert (v1.fingerprint, v1.code_version, v1.created_by) == ("sha256:abc", "deadbeef", "alice")
    assert v1.created_at.tzinfo is not None
    assert abs((datetime.now(UTC) - v1.created_at).total_seconds()) < 60
    assert len(v1.artifact_sha256) == 64
    # A third registration adds a version; the earlier ones are unchanged.
    assert register(registry, tiny_models["xgboost"], auc=0.9) == 3
    assert registry.get("delay", 1) == v1
    assert [v.version for v in registry.versions("delay")] == [1, 2, 3]
    assert registry.resolve("delay", "latest").version == 3
    assert registry.resolve("delay", "2").version == 2
    assert registry.resolve("delay", 1).flavor == "sklearn"
    listed = registry.list_models()
    assert [(m.name, m.latest_version, m.version_count) for m in listed] == [("delay", 3, 3)]


def test_loaded_model_predicts_like_the_registered_one(
    registry: ModelRegistry, tiny_models: dict[str, TrainedModel]
) -> None:
    rows = pl.DataFrame(
        {
            "distance_km": [500.0, 3000.0, None],
            "night": [True, False, None],
            "hour_of_day": [3, 19, 12],
            "airline": ["XX", "AA", "never-seen"],
        }
    )
    for flavor, model in tiny_models.items():
        mv = registry.get("delay", register(registry, model))
        assert mv.flavor == flavor
        loaded = ModelRegistry.open(registry.url, repo_root=registry.repo_root).load(mv)
        np.testing.assert_array_equal(loaded.predict(rows), model.predict(rows))


def test_unknown_names_say_what_exists(
    registry: ModelRegistry, tiny_models: dict[str, TrainedModel]
) -> None:
    register(registry, tiny_models["xgboost"])
    with pytest.raises(
        ModelNotFoundError, match=r"(?s)no registered model named 'nope'.*\['delay'\]"
    ):
        registry.resolve("nope", None)
    with pytest.raises(ModelNotFoundError, match=r"(?s)has no version 9.*\[1\]"):
        registry.get("delay", 9)
    with pytest.raises(ModelNotFoundError, match="no alias 'champion'"):
        registry.resolve("delay", None)
    with pytest.raises(RegistryError, match="invalid alias"):
        registry.set_alias("delay", "latest", 1, actor="alice")


def test_aliases_move_and_history_records_every_move(
    registry: ModelRegistry, tiny_models: dict[str, TrainedModel]
) -> None:
    for _ in range(3):
        register(registry, tiny_models["xgboost"])
    before = registry.change_counter()
    registry.set_alias("delay", "champion", 1, actor="alice", reason="first")
    registry.set_alias("delay", "challenger", 2, actor="bob")
    move = registry.set_alias("delay", "champion", 3, actor="carol", reason="better auc")
    assert (move.from_version, move.to_version, move.actor) == (1, 3, "carol")
    assert registry.aliases("delay") == {"challenger": 2, "champion": 3}
    assert registry.resolve("delay", None).version == 3
    with pytest.raises(RegistryError, match="already points at version 3"):
        registry.set_alias("delay", "champion", 3, actor="carol")
    assert registry.resolve("delay", "@challenger").version == 2
    history = registry.history("delay")
    assert [(h.alias, h.from_version, h.to_version, h.actor, h.reason) for h in history] == [
        ("champion", None, 1, "alice", "first"),
        ("challenger", None, 2, "bob", ""),
        ("champion", 1, 3, "carol", "better auc"),
    ]
    assert all(h.at.tzinfo is not None and not h.forced for h in history)
    assert history[0].at <= history[1].at <= history[2].at
    assert [h.to_version for h in registry.history("delay", "champion")] == [1, 3]
    assert registry.change_counter() == before + 3
    removed = registry.remove_alias("delay", "challenger", actor="bob")
    assert (removed.from_version, removed.to_version) == (2, None)
    assert registry.aliases("delay") == {"champion": 3}


def test_rollback_returns_to_the_previous_version(
    registry: ModelRegistry, tiny_models: dict[str, TrainedModel]
) -> None:
    for _ in range(3):
        register(registry, tiny_models["xgboost"])
    registry.set_alias("delay", "champion", 1, actor="alice")
    with pytest.raises(RegistryError, match="no earlier version to return to"):
        registry.rollback("delay", "champion", actor="ops")
    registry.set_alias("delay", "champion", 2, actor="alice")
    registry.set_alias("delay", "champion", 3, actor="alice")
    back = registry.rollback("delay", "champion", actor="ops")
    assert (back.from_version, back.to_version, back.actor) == (3, 2, "ops")
    assert back.reason.startswith("rollback of move #")
    assert registry.aliases("delay")["champion"] == 2
    # Rolling back the rollback returns to where it was.
    assert registry.rollback("delay", "champion", actor="ops").to_version == 3
    assert len(registry.history("delay")) == 5
    with pytest.raises(RegistryError, match="never moved"):
        registry.rollback("delay", "shadow", actor="ops")


def test_artifact_tampering_is_detected(
    registry: ModelRegistry, tiny_models: dict[str, TrainedModel], registry_url: str
) -> None:
    mv = registry.get("delay", register(registry, tiny_models["xgboost"]))
    engine = sa.create_engine(registry_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE model_versions SET artifact = :b"), {"b": b"FLMODEL1junk"})
    engine.dispose()
    fresh = ModelRegistry.open(registry_url)  # no cached model
    with pytest.raises(ArtifactIntegrityError, match="sha256"):
        fresh.load(mv)


def test_attachments_are_immutable(
    registry: ModelRegistry, tiny_models: dict[str, TrainedModel]
) -> None:
    version = register(registry, tiny_models["xgboost"])
    registry.attach("delay", version, "notes.txt", b"hello")
    assert registry.attachment("delay", version, "notes.txt") == b"hello"
    assert registry.attachment("delay", version, "missing") is None
    with pytest.raises(RegistryError, match="immutable"):
        registry.attach("delay", version, "notes.txt", b"changed")
    assert registry.attachment_keys("delay", version) == ["notes.txt"]


def test_metric_gates_refuse_and_leave_the_registry_unchanged(
    registry: ModelRegistry, tiny_models: dict[str, TrainedModel]
) -> None:
    good = register(registry, tiny_models["xgboost"], auc=0.80)
    worse = register(registry, tiny_models["xgboost"], auc=0.70)
    registry.set_alias("delay", "champion", good, actor="alice")
    before = snapshot(registry)
    gates = GateConfig(
        metric_thresholds=dict([parse_threshold("auc>=0.75")]), max_regression={"auc": 0.02}
    )
    with pytest.raises(GatesFailedError) as refused:
        registry.set_alias("delay", "champion", worse, actor="bob", gates=gates)
    message = str(refused.value)
    assert "2 gate(s) failed" in message
    assert "metric auc: 0.7 (required: >= 0.75)" in message
    assert "no regression in auc: 0.7 (required: >= 0.78 (version 1: 0.8" in message
    assert isinstance(refused.value, PromotionRefusedError)
    assert snapshot(registry) == before
    # --force skips the gates and says so in the history.
    forced = registry.set_alias("delay", "champion", worse, actor="bob", gates=gates, force=True)
    assert forced.forced
    assert registry.history("delay")[-1].forced


def test_signature_gate_refuses_a_changed_service(
    registry: ModelRegistry, tiny_models: dict[str, TrainedModel], tiny_repo: Path, tmp_path: Path
) -> None:
    version = register(registry, tiny_models["xgboost"])
    assert registry.set_alias(
        "delay", "champion", version, actor="a", gates=GateConfig()
    ).to_version
    changed = write_tiny_repo(
        tmp_path / "changed", DEFINITIONS.replace("* 1.609", "* 1.6").replace('"night"', '"nite"')
    )
    before = snapshot(registry)
    with pytest.raises(GatesFailedError) as refused:
        registry.set_alias(
            "delay", "challenger", version, actor="a", gates=GateConfig(repo_root=changed)
        )
    message = str(refused.value)
    assert "signature" in message
    assert "features no longer served: ['night']" in message
    assert "features added: ['nite']" in message
    gone = write_tiny_repo(tmp_path / "gone", DEFINITIONS.replace("delay_svc", "other_svc"))
    with pytest.raises(GatesFailedError, match=r"service absent \(live services: \['other_svc'\]"):
        registry.set_alias(
            "delay", "challenger", version, actor="a", gates=GateConfig(repo_root=gone)
        )
    assert snapshot(registry) == before
    shutil.rmtree(changed)


def test_warmup_gate_refuses_a_slow_model(
    registry: ModelRegistry, tiny_models: dict[str, TrainedModel]
) -> None:
    version = register(registry, tiny_models["xgboost"])
    sample = pl.DataFrame(
        {"distance_km": [800.0], "night": [False], "hour_of_day": [18], "airline": ["UA"]}
    )
    buffer = __import__("io").BytesIO()
    sample.write_parquet(buffer)
    registry.attach("delay", version, TRAINING_SAMPLE, buffer.getvalue())
    before = snapshot(registry)
    impossible = GateConfig(max_p99_ms=1e-6, warmup_rows=64, warmup_runs=5)
    with pytest.raises(GatesFailedError, match=r"warm-up latency: p99 [0-9.]+ ms over 5 runs"):
        registry.set_alias("delay", "champion", version, actor="a", gates=impossible)
    assert snapshot(registry) == before
    ok = GateConfig(max_p99_ms=5000, warmup_rows=64, warmup_runs=5)
    assert registry.set_alias("delay", "champion", version, actor="a", gates=ok).to_version == 1


def test_concurrent_writers_get_distinct_versions(
    registry_url: str, tiny_models: dict[str, TrainedModel]
) -> None:
    ModelRegistry.open(registry_url).close()  # tables exist before the race
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with ModelRegistry.open(registry_url) as reg:
                for _ in range(4):
                    register(reg, tiny_models["sklearn"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with ModelRegistry.open(registry_url) as reg:
        assert [v.version for v in reg.versions("delay")] == list(range(1, 9))
        assert reg.change_counter() == 8


def test_default_url_is_the_repo_sqlite_file_unless_the_env_says_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FEATURELIB_REGISTRY_URL", raising=False)
    with ModelRegistry.open(repo_root=tmp_path) as reg:
        assert reg.url == f"sqlite:///{tmp_path.resolve() / 'data' / 'models.db'}"
        assert reg.change_counter() == 0
    assert (tmp_path / "data" / "models.db").is_file()
    other = tmp_path / "elsewhere.db"
    monkeypatch.setenv("FEATURELIB_REGISTRY_URL", f"sqlite:///{other}")
    with ModelRegistry.open(repo_root=tmp_path) as reg:
        assert reg.url == f"sqlite:///{other}"
    assert other.is_file()
