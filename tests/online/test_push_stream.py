"""Push and stream ingestion: pushed events reach the online store *and* the offline log, late
events land in the right tile, bad events are refused with reasons (or dead-lettered), event ids
de-duplicate, and a consumer killed at any step loses nothing and counts nothing twice.

Real Redis (the `redis_url` fixture), real Parquet files, and a real consumer subprocess that
is SIGKILLed at a known step (the `FEATURELIB_STREAM_TEST_PAUSE` seam).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pit_cases import pit

import featurelib as fl
from featurelib.cli import main as cli_main
from featurelib.offline.io import ORDER, push_log_files, read_source
from featurelib.online.materialize import materialize
from featurelib.online.push import PushError, push
from featurelib.online.read import ServingPlan, get_online_features
from featurelib.online.store import RedisOnlineStore
from featurelib.online.stream import PAUSE_ENV, StreamConsumer
from featurelib.online.testing import StderrLines
from featurelib.repo import Repo

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
T = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
PROJECT = "pushtest"

DEFINITIONS = """
import featurelib as fl

user = fl.Entity("user", {"user_id": fl.String})
merchant = fl.Entity("merchant", {"merchant": fl.String})
events = fl.ParquetSource(
    "events",
    "data/events",
    timestamp_field="ts",
    created_timestamp_field="created",
    schema={
        "event_id": fl.String,
        "user_id": fl.String,
        "ts": fl.Timestamp,
        "created": fl.Timestamp,
        "amount": fl.Float64,
        "n": fl.Int64,
        "merchant": fl.String,
    },
)
by_merchant = fl.FeatureView("by_merchant", [merchant], events, {"m_amount": fl.col("amount")})
latest = fl.FeatureView("latest", [user], events, {"amount": fl.col("amount"), "n": fl.col("n")})
totals = fl.AggregationView(
    "totals",
    [user],
    events,
    [
        fl.count().windows("1h", "1d", name="cnt"),
        fl.sum("amount").windows("1h", "1d", name="amt"),
        fl.last("n").windows("1d", name="last_n"),
    ],
)
svc = fl.FeatureService("svc", [latest, totals])
"""
SCHEMA = {
    "event_id": pl.String,
    "user_id": pl.String,
    "ts": pl.Datetime("us", "UTC"),
    "created": pl.Datetime("us", "UTC"),
    "amount": pl.Float64,
    "n": pl.Int64,
    "merchant": pl.String,
}


def event(eid: str, user: str | None, at: datetime, amount: float, n: int) -> dict[str, Any]:
    return {"event_id": eid, "user_id": user, "ts": at, "created": None, "amount": amount, "n": n}


def test_a_null_key_only_skips_the_views_keyed_on_it(repo_dir: Path, client: redis.Redis) -> None:
    """As offline: a row without a merchant still counts for its user (and vice versa); a row
    no view can use is refused."""
    repo = Repo.load(repo_dir)
    store = RedisOnlineStore(client, PROJECT)
    rows = [
        {**event("m1", "u8", T, 1.0, 1), "merchant": "shop"},
        event("m2", "u8", T, 2.0, 2),  # no merchant
        {**event("m3", None, T, 3.0, 3), "merchant": "shop"},  # no user
    ]
    result = push(store, repo, "events", rows, now=T)
    assert result.skipped == {"by_merchant": 1, "latest": 1, "totals": 1}
    assert (result.online["by_merchant"], result.online["latest"]) == (1, 1)
    assert compare(store, repo, ["u8"], T)["cnt_1h"] == [2]
    with pytest.raises(PushError) as info:
        push(store, repo, "events", [event("m4", None, T, 4.0, 4)], now=T)
    assert info.value.errors[0].reasons == (
        "missing join key 'merchant'",
        "missing join key 'user_id'",
    )


INITIAL = [
    event("e1", "u1", T - timedelta(minutes=50), 1.0, 1),
    event("e2", "u1", T - timedelta(minutes=10), 2.0, 2),
    event("e3", "u2", T - timedelta(hours=3), 3.0, 3),
]


@pytest.fixture
def repo_dir(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    (root / "data" / "events").mkdir(parents=True)
    (root / "feature_store.yaml").write_text(f"project: {PROJECT}\n")
    (root / "definitions.py").write_text(DEFINITIONS)
    pl.DataFrame(INITIAL, schema=SCHEMA).write_parquet(root / "data" / "events" / "part-0.parquet")
    return root


@pytest.fixture
def client(redis_url: str) -> redis.Redis:
    return redis.Redis.from_url(redis_url)


def compare(
    store: RedisOnlineStore, repo: Repo, users: list[str], t: datetime
) -> dict[str, list[Any]]:
    """Online features at t == training_set at t, for `users`; returns the online values."""
    svc = repo.service("svc")
    online = get_online_features(store, ServingPlan(svc), [{"user_id": u} for u in users], at=t)
    spine = pl.DataFrame({"user_id": users, "event_timestamp": [t] * len(users)})
    offline = fl.training_set(svc, spine, repo=repo)
    for name in svc.output_names():
        got, want = online.features[name].to_list(), offline[name].to_list()
        assert all(pit.close(g, w) for g, w in zip(got, want, strict=True)), (
            f"t={t} {name}: online {got} != offline {want}"
        )
    return online.to_dict()


def log_rows(root: Path, source: str = "events") -> pl.DataFrame:
    files = push_log_files(root, source)
    return pl.concat([pl.read_parquet(f) for f in files]) if files else pl.DataFrame()


# ---------------------------------------------------------------------- push


def test_late_event_updates_the_right_tile_online_and_offline(
    repo_dir: Path, client: redis.Redis
) -> None:
    repo = Repo.load(repo_dir)
    store = RedisOnlineStore(client, PROJECT)
    materialize(store, ServingPlan(repo.service("svc")).stored, repo_dir, EPOCH, T)
    before = compare(store, repo, ["u1", "u2"], T)
    assert before["cnt_1h"] == [2, 0]
    late = [
        event("late1", "u1", T - timedelta(minutes=30), 10.0, 7),  # 30 tiles behind "now"
        event("late2", "u2", T - timedelta(hours=5), 5.0, 9),  # outside 1h, inside 1d
    ]
    result = push(store, repo, "events", late, now=T)
    assert (result.appended, result.duplicates, result.log_file is not None) == (2, 0, True)
    after = compare(store, repo, ["u1", "u2", "nobody"], T)
    assert after["cnt_1h"] == [3, 0, 0]
    assert after["amt_1h"] == [13.0, 0.0, 0.0]
    assert after["cnt_1d"] == [3, 2, 0]
    assert after["amt_1d"] == [13.0, 8.0, 0.0]
    assert after["amount"] == [2.0, 3.0, None]  # a late row never replaces a newer one
    assert after["last_n_1d"] == [2, 3, None]  # `last` follows event time, not arrival
    # Later reads slide over the late tile exactly as the offline engine does.
    later = compare(store, repo, ["u1", "u2"], T + timedelta(minutes=31))
    assert later["cnt_1h"] == [1, 0]  # only e2 (T-10min) is left; T-30min fell out


def test_pushed_rows_join_the_source_offline(repo_dir: Path, client: redis.Redis) -> None:
    repo = Repo.load(repo_dir)
    store = RedisOnlineStore(client, PROJECT)
    before = read_source(repo.sources["events"], repo_dir).collect()
    fresh = [event("p1", "u3", T + timedelta(minutes=1), 4.5, 11)]
    push(store, repo, "events", pl.DataFrame(fresh, schema=SCHEMA), now=T)
    push(store, repo, "events", [event("p2", "u3", T, 1.5, 12)], now=T)
    after = read_source(repo.sources["events"], repo_dir).collect()
    assert after[ORDER].to_list() == list(range(5))
    assert after["event_id"].to_list() == [*before["event_id"].to_list(), "p1", "p2"]
    assert after.drop(ORDER).head(3).equals(before.drop(ORDER))
    spine = pl.DataFrame(
        {"user_id": ["u3", "u3"], "event_timestamp": [T, T + timedelta(minutes=1)]}
    )
    out = fl.training_set(repo.service("svc"), spine, repo=repo)
    assert out["amount"].to_list() == [1.5, 4.5]
    assert out["cnt_1h"].to_list() == [1, 2]
    # A source whose own files are gone reads as its push log alone.
    (repo_dir / "data" / "events" / "part-0.parquet").unlink()
    alone = read_source(repo.sources["events"], repo_dir).collect()
    assert alone["event_id"].to_list() == ["p1", "p2"]


def test_invalid_rows_are_refused_with_reasons(repo_dir: Path, client: redis.Redis) -> None:
    repo = Repo.load(repo_dir)
    store = RedisOnlineStore(client, PROJECT)
    rows: list[Any] = [
        {"event_id": "ok", "user_id": "u1", "ts": "2024-05-01T11:00:00+02:00", "amount": 1},
        {"event_id": "k", "ts": "2024-05-01T11:00:00", "amount": 1.0},
        {"event_id": "t", "user_id": "u1", "ts": "yesterday"},
        {"event_id": "a", "user_id": "u1", "ts": "2024-05-01", "amount": "lots", "n": 1.5},
        {"event_id": "u", "user_id": 42, "ts": "2024-05-01"},
        {"user_id": "u1", "ts": "2024-05-01"},
        "not an object",
    ]
    with pytest.raises(PushError) as info:
        push(store, repo, "events", rows, now=T)
    errors = {e.row: " | ".join(e.reasons) for e in info.value.errors}
    assert sorted(errors) == [1, 2, 3, 4, 5, 6]
    assert errors[1] == "missing join key 'merchant' | missing join key 'user_id'"
    assert "cannot read 'yesterday'" in errors[2]
    assert "amount: expected Float64, got str 'lots'" in errors[3]
    assert "n: expected Int64, got float 1.5" in errors[3]
    assert "user_id: expected String, got int 42" in errors[4]
    assert errors[5] == "missing event id 'event_id'"
    assert errors[6] == "a row must be an object (mapping), got str"
    assert "6 of 7 rows are invalid" in str(info.value)
    assert push_log_files(repo_dir, "events") == []  # nothing of the batch was written
    assert client.keys(f"fl:{PROJECT}:*") == []
    # The valid row alone goes through; its +02:00 time is stored in UTC.
    result = push(store, repo, "events", rows[:1], now=T)
    assert result.appended == 1
    assert log_rows(repo_dir)["ts"].to_list() == [datetime(2024, 5, 1, 9, 0, tzinfo=UTC)]


def test_duplicate_event_ids_count_once(repo_dir: Path, client: redis.Redis) -> None:
    repo = Repo.load(repo_dir)
    store = RedisOnlineStore(client, PROJECT)
    rows = [
        event("x1", "u9", T - timedelta(minutes=5), 2.0, 1),
        event("x1", "u9", T - timedelta(minutes=5), 2.0, 1),
    ]
    first = push(store, repo, "events", rows, now=T)
    again = push(store, repo, "events", rows[:1], now=T)
    assert (first.appended, first.duplicates) == (1, 1)
    assert (again.appended, again.duplicates, again.log_file) == (0, 1, None)
    assert log_rows(repo_dir)["event_id"].to_list() == ["x1"]
    values = compare(store, repo, ["u9"], T)
    assert (values["cnt_1h"], values["amt_1h"]) == ([1], [2.0])


def test_failed_log_write_releases_its_claims(
    repo_dir: Path, client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    import featurelib.online.push as push_module

    repo = Repo.load(repo_dir)
    store = RedisOnlineStore(client, PROJECT)
    log_dir = repo_dir / "data" / "_push_log"
    log_dir.mkdir(parents=True)
    (log_dir / "events").write_text("a file where the log directory should be")
    rows = [event("w1", "u7", T - timedelta(minutes=1), 1.0, 1)]
    with pytest.raises(push_module.FeaturelibError, match="cannot write the push log"):
        push(store, repo, "events", rows, now=T)
    assert client.keys(f"fl:{PROJECT}:seen:*") == []  # claim released: a retry need not wait
    (log_dir / "events").unlink()
    result = push(store, repo, "events", rows, now=T)
    assert (result.appended, result.duplicates, result.seconds < 5) == (1, 0, True)
    assert log_rows(repo_dir)["event_id"].to_list() == ["w1"]


def test_cli_push_file(repo_dir: Path, redis_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    rows = repo_dir / "rows.json"
    rows.write_text(json.dumps([{"event_id": "c1", "user_id": "u5", "ts": "2024-05-01T10:00:00"}]))
    args = ["push", "--repo", str(repo_dir), "--source", "events", "--file", str(rows)]
    assert cli_main([*args, "--redis-url", redis_url]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["appended"], summary["online"]["latest"]) == (1, 1)
    assert cli_main([*args, "--redis-url", redis_url]) == 0
    assert json.loads(capsys.readouterr().out)["duplicates"] == 1
    rows.write_text(json.dumps([{"event_id": "c2", "ts": "2024-05-01T10:00:00"}]))
    assert cli_main([*args, "--redis-url", redis_url]) == 2
    assert "missing join key 'user_id'" in capsys.readouterr().err


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=pit.scenario(), data=st.data())
def test_pushed_events_online_equals_offline(
    tmp_path_factory: pytest.TempPathFactory, redis_url: str, case: Any, data: st.DataObject
) -> None:
    """Random events, some materialized and the rest pushed late and out of order in several
    batches: online(t) == training_set(t) for every entity."""
    events, files, spine_rows = case
    t = pit.ts(data.draw(st.sampled_from([r[2] for r in spine_rows]), label="t"))
    pushable = [i for i, e in enumerate(events) if e.k1 is not None and pit.ts(e.minute) <= t]
    pushed = data.draw(st.permutations(pushable), label="pushed order") if pushable else []
    pushed = pushed[: data.draw(st.integers(0, len(pushed)), label="how many")]
    cuts = sorted(data.draw(st.lists(st.integers(0, len(pushed)), max_size=2), label="batches"))
    root = tmp_path_factory.mktemp("root")
    kept = [[i for i in f if i not in set(pushed)] for f in files]
    pit.write_files(root / "events", events, kept)
    svc = pit.build(root / "events")
    repo = Repo.from_objects([svc], root=root)
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    store = RedisOnlineStore(client, "prop")
    plan = ServingPlan(svc)
    materialize(store, plan.stored, root, EPOCH, t)
    bounds = [0, *cuts, len(pushed)]
    for a, b in itertools.pairwise(bounds):
        if a < b:
            batch = [events[i] for i in pushed[a:b]]
            frame = pl.DataFrame(
                {
                    "k1": [e.k1 for e in batch],
                    "k2": [e.k2 for e in batch],
                    "ts": [pit.ts(e.minute) for e in batch],
                    "created": [None if e.created is None else pit.ts(e.created) for e in batch],
                    "x": [e.x for e in batch],
                    "y": [e.y for e in batch],
                },
                schema_overrides={"created": pl.Datetime("us", "UTC"), "x": pl.Float64},
            )
            push(store, repo, "events", frame, now=t)
    keys = [(k1, k2) for k1 in [*pit.K1, "zz"] for k2 in pit.K2]
    rows = pl.DataFrame({"k1": [k for k, _ in keys], "k2": [k for _, k in keys]})
    online = get_online_features(store, plan, rows.with_columns(boost=pl.lit(0.5)), at=t)
    spine = rows.with_columns(event_timestamp=pl.lit(t), boost=pl.lit(0.5))
    offline = fl.training_set(svc, spine, repo=root)
    for name in svc.output_names():
        got, want = online.features[name].to_list(), offline[name].to_list()
        for key, g, w in zip(keys, got, want, strict=True):
            assert pit.close(g, w), f"t={t} {key} {name}: online {g!r} != offline {w!r}"


# ---------------------------------------------------------------------- stream


def xadd_event(client: redis.Redis, stream: str, row: dict[str, Any]) -> bytes:
    data = json.dumps(row, default=lambda v: v.isoformat())
    entry_id: bytes = client.xadd(stream, {"data": data})
    return entry_id


def test_stream_consumer_applies_dedupes_and_dead_letters(
    repo_dir: Path, client: redis.Redis
) -> None:
    repo = Repo.load(repo_dir)
    store = RedisOnlineStore(client, PROJECT)
    materialize(store, ServingPlan(repo.service("svc")).stored, repo_dir, EPOCH, T)
    stream = "events:in"
    good = [
        event(f"s{i}", f"u{i % 4}", T - timedelta(minutes=59 - i), float(i), i) for i in range(40)
    ]
    for row in good:
        xadd_event(client, stream, row)
    xadd_event(client, stream, good[3])  # producer retry: same event id
    xadd_event(client, stream, good[17])
    bad_ids = {
        client.xadd(stream, {"data": "{not json"}): "data is not valid JSON",
        client.xadd(stream, {"data": "[1, 2]"}): "data must be a JSON object, got list",
        client.xadd(stream, {"payload": "{}"}): "entry has no 'data' field",
        xadd_event(client, stream, {**good[0], "event_id": "b1", "user_id": None}): (
            "missing join key 'user_id'"
        ),
        xadd_event(client, stream, {**good[0], "event_id": "b2", "ts": "12/31/2024"}): (
            "ts: cannot read '12/31/2024'"
        ),
        xadd_event(client, stream, {**good[0], "event_id": "b3", "amount": [1]}): (
            "amount: expected Float64, got list [1]"
        ),
    }
    consumer = StreamConsumer(
        store,
        repo,
        "events",
        stream,
        "fl",
        "c1",
        batch_size=16,
        block_ms=50,
        now=lambda: T,
        log=None,
    )
    stats = consumer.run(max_messages=48)
    assert (stats.messages, stats.applied, stats.duplicates, stats.dead) == (48, 40, 2, 6)
    assert stats.batches == 3
    assert client.xpending(stream, "fl")["pending"] == 0
    dead = client.xrange(f"{stream}:dead")
    assert len(dead) == 6
    for _, fields in dead:
        reason = fields[b"reason"].decode()
        assert bad_ids[fields[b"original_id"]] in reason, reason
        assert fields[b"source"] == b"events"
    logged = log_rows(repo_dir)
    assert sorted(logged["event_id"].to_list()) == sorted(r["event_id"] for r in good)
    values = compare(store, repo, ["u0", "u1", "u2", "u3"], T)
    assert values["cnt_1h"] == [10, 12, 10, 10]  # u1 also has e1 (T-50min) and e2 (T-10min)
    assert values["amount"] == [36.0, 2.0, 38.0, 39.0]  # u1's e2 is newer than its pushes
    assert stats == consumer.stats
    # Nothing new: an idle consumer exits on its own.
    assert consumer.run(idle_exit_s=0.2).messages == 48


def test_stream_event_that_breaks_the_push_is_dead_lettered_alone(
    repo_dir: Path, client: redis.Redis
) -> None:
    repo = Repo.load(repo_dir)
    store = RedisOnlineStore(client, PROJECT)
    for eid in ("ok1", "poison", "ok2"):
        xadd_event(client, "p:events", event(eid, "u6", T - timedelta(minutes=2), 1.0, 1))
    consumer = StreamConsumer(
        store, repo, "events", "p:events", "fl", "c1", now=lambda: T, log=None
    )
    real_apply = consumer.pusher.apply

    def apply(batch: Any, **kwargs: Any) -> Any:
        if "poison" in (batch.ids or []):
            raise RuntimeError("boom")
        return real_apply(batch, **kwargs)

    consumer.pusher.apply = apply  # type: ignore[method-assign]
    stats = consumer.run(max_messages=3)
    assert (stats.applied, stats.dead, stats.messages) == (2, 1, 3)
    (_, fields), *_ = client.xrange("p:events:dead")
    assert fields[b"reason"] == b"push failed: RuntimeError: boom"
    assert sorted(log_rows(repo_dir)["event_id"].to_list()) == ["ok1", "ok2"]
    assert client.xpending("p:events", "fl")["pending"] == 0


def _start_consumer(
    repo_dir: Path, redis_url: str, stream: str, consumer: str, pause: str | None
) -> tuple[subprocess.Popen[str], StderrLines]:
    env = {**os.environ, PAUSE_ENV: pause or ""}
    command = [
        sys.executable,
        "-m",
        "featurelib.cli",
        "stream",
        "--repo",
        str(repo_dir),
        "--source",
        "events",
        "--stream",
        stream,
        "--group",
        "g",
        "--consumer",
        consumer,
        "--redis-url",
        redis_url,
        "--batch-size",
        "10",
        "--block-ms",
        "100",
        "--claim-idle-ms",
        "500",
    ]
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return proc, StderrLines(proc)


@pytest.mark.parametrize(
    ("pause", "restart_as"),
    [("read", "c1"), ("claimed", "c2"), ("logged", "c1"), ("applied", "c2")],
)
def test_consumer_killed_mid_batch_applies_everything_exactly_once(
    repo_dir: Path, redis_url: str, client: redis.Redis, pause: str, restart_as: str
) -> None:
    """SIGKILL after reading / claiming ids / logging / serving, before the acknowledgement;
    a restart (same name: own pending entries; other name: XAUTOCLAIM after the idle time)
    applies every event exactly once, offline and online."""
    stream = "crash:events"
    start = datetime.now(UTC).replace(second=0, microsecond=0)
    events = [
        event(f"k{i}", f"u{i % 2}", start - timedelta(minutes=i + 1), 1.0, i) for i in range(30)
    ]
    for row in events:
        xadd_event(client, stream, row)
    proc, lines = _start_consumer(repo_dir, redis_url, stream, "c1", pause)
    try:
        lines.wait_for(f"paused at {pause}")
    finally:
        proc.kill()
        proc.wait(timeout=10)
    assert client.xpending(stream, "g")["pending"] == 10  # the first batch, never acknowledged
    repo = Repo.load(repo_dir)
    store = RedisOnlineStore(client, PROJECT)
    restarted = StreamConsumer(
        store,
        repo,
        "events",
        stream,
        "g",
        restart_as,
        batch_size=10,
        block_ms=100,
        claim_idle_ms=500,
        log=None,
    )
    stats = restarted.run(idle_exit_s=1.5)
    assert client.xpending(stream, "g")["pending"] == 0
    assert stats.messages == 30
    assert (stats.applied, stats.resumed) == (
        (20, 10) if pause in ("logged", "applied") else (30, 0)
    )
    logged = log_rows(repo_dir)["event_id"].to_list()
    assert sorted(logged) == sorted(e["event_id"] for e in events)  # each exactly once
    values = compare(store, repo, ["u0", "u1"], datetime.now(UTC))
    assert values["cnt_1h"] == [15, 15]
    assert values["amt_1h"] == [15.0, 15.0]


def test_consumer_stops_gracefully_on_sigterm(
    repo_dir: Path, redis_url: str, client: redis.Redis
) -> None:
    xadd_event(client, "term:events", event("q1", "u1", T, 1.0, 1))
    proc, lines = _start_consumer(repo_dir, redis_url, "term:events", "c1", None)
    try:
        lines.wait_for("SIGTERM/SIGINT stop")
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
        assert proc.stdout is not None
        out = proc.stdout.read()
    finally:
        proc.kill()
    assert proc.returncode == 0
    lines.wait_for("SIGTERM: stopping after the current batch", timeout=5)
    stats = json.loads(out)
    assert stats["failures"] == 0
    assert client.xpending("term:events", "g")["pending"] == 0
