"""Feast on featurelib's Redis online store: `feast materialize` writes featurelib's layout and
`FeatureStore.get_online_features` / `feast serve` return exactly featurelib's online values."""

from __future__ import annotations

import json
import math
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from feast import FeatureStore
from feast.protos.feast.serving.ServingService_pb2 import FieldStatus

import featurelib as fl
from featurelib.feast.online_store import FeaturelibOnlineStore, delete_view_data
from featurelib.online import layout
from featurelib.online.api import get_features, last_materialized, open_store
from featurelib.online.read import ServingPlan, get_online_features
from featurelib.online.store import RedisOnlineStore

FEAST = str(Path(sys.executable).parent / "feast")
START = datetime(2012, 12, 1, tzinfo=UTC)  # the planes snapshot is dated 2012-12-31
END = datetime(2013, 3, 2, tzinfo=UTC)
READ_AT = "  read_at: '2013-03-02T00:00:00Z'"  # demo data is from 2013: serve as of END

pytestmark = pytest.mark.filterwarnings("ignore:On demand feature view is an experimental")

FEATURES = [
    "carrier_delays:carrier_flights_1d",
    "carrier_delays:carrier_arr_delay_mean_7d",
    "carrier_delays:carrier_arr_delay_std_28d",
    "route_delays:route_flights_28d",  # multi-key entity (origin, dest)
    "route_delays:route_arr_delay_max_1d",
    "plane_delays:plane_recent_arr_delays_7d",  # list
    "plane_delays:plane_last_arr_delay_1d",
    "weather_at_origin:temp",
    "weather_at_origin:low_visibility",
    "plane_info:engine",
    "plane_info:seats",
]
ROWS = [
    {"carrier": "UA", "origin": "EWR", "dest": "ORD", "tailnum": "N14228"},
    {"carrier": "AA", "origin": "JFK", "dest": "LAX", "tailnum": "N3DUAA"},
    {"carrier": "B6", "origin": "LGA", "dest": "FLL", "tailnum": "N503JB"},
    {"carrier": "ZZ", "origin": "XXX", "dest": "YYY", "tailnum": "NOPE"},  # unknown everywhere
]


@pytest.fixture(scope="module")
def online(
    repo_copier: Callable[..., Path],
    feast_redis_url: Callable[[], str],
    feast_cli: Callable[..., subprocess.CompletedProcess[str]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Path, str]]:
    """A demo repo copy on featurelib's online store, applied and materialized [START, END]
    by the `feast` CLI, with REDIS_URL set to a throwaway Redis (also for this process)."""
    repo = repo_copier(tmp_path_factory.mktemp("online") / "feature_repo", featurelib_online=True)
    config = repo / "feature_store.yaml"
    marker = "  type: featurelib.feast.online_store.FeaturelibOnlineStore\n"
    config.write_text(config.read_text().replace(marker, marker + READ_AT + "\n"))
    url = feast_redis_url()
    env = {"REDIS_URL": url}
    for args in (["apply"], ["materialize", START.isoformat(), END.isoformat()]):
        run = feast_cli(repo, *args, env=env)
        assert run.returncode == 0, run.stdout + run.stderr
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("REDIS_URL", url)
        yield repo, url


@pytest.fixture(scope="module")
def fs(online: tuple[Path, str]) -> FeatureStore:
    return FeatureStore(repo_path=str(online[0]))


@pytest.fixture(scope="module")
def repo(online: tuple[Path, str]) -> fl.Repo:
    return fl.Repo.load(online[0])


@pytest.fixture(scope="module")
def store(repo: fl.Repo) -> RedisOnlineStore:
    return open_store(repo)  # REDIS_URL: the same Redis Feast wrote to


def _stored(repo: fl.Repo, name: str) -> fl.FeatureView | fl.AggregationView:
    view = repo.view(name)
    assert isinstance(view, fl.FeatureView | fl.AggregationView)
    return view


def _featurelib(
    repo: fl.Repo, store: RedisOnlineStore, features: list[str], rows: list[dict[str, Any]]
) -> tuple[dict[str, list[Any]], dict[str, list[str]]]:
    """featurelib's own online read of `features` ("view:feature") as of END."""
    return _featurelib_at(repo, store, features, rows, END)


def _featurelib_at(
    repo: fl.Repo,
    store: RedisOnlineStore,
    features: list[str],
    rows: list[dict[str, Any]],
    at: datetime,
) -> tuple[dict[str, list[Any]], dict[str, list[str]]]:
    by_view: dict[str, list[str]] = {}
    for ref in features:
        view, name = ref.split(":")
        by_view.setdefault(view, []).append(name)
    service = fl.FeatureService("expected", [repo.view(v)[n] for v, n in by_view.items()])
    resp = get_online_features(store, ServingPlan(service), rows, at=at)
    return resp.to_dict(), resp.statuses


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)


def _feast_status(status: str) -> str:
    """What Feast reports for a featurelib status (see featurelib/feast/online_store.py)."""
    return {"NULL_VALUE": "PRESENT", "OUTSIDE_MAX_AGE": "NOT_FOUND"}.get(status, status)


def test_materialize_writes_featurelib_layout(
    repo: fl.Repo, store: RedisOnlineStore, online: tuple[Path, str]
) -> None:
    carrier = _stored(repo, "carrier_delays")
    weather = _stored(repo, "weather_at_origin")
    agg = layout.aggregation_key(store.project, carrier.name, carrier.version, "UA")
    plain = layout.plain_key(store.project, weather.name, weather.version, "EWR")
    assert store.client.type(agg) == b"hash"  # tiles and blocks, not Feast rows
    names: list[Any] = list(store.client.hkeys(agg))
    fields = [layout.parse_block_field(f) for f in names]
    assert fields  # <hop_us>:<level>:<block>
    assert store.client.type(plain) == b"string"
    assert last_materialized(store, carrier) == END  # featurelib's incremental state
    assert store.project == "flights"


def test_get_online_features_equals_featurelib(
    fs: FeatureStore, repo: fl.Repo, store: RedisOnlineStore
) -> None:
    response = fs.get_online_features(features=FEATURES, entity_rows=ROWS)
    got = response.to_dict()
    statuses = {
        name: [FieldStatus.Name(s) for s in vector.statuses]
        for name, vector in zip(
            response.proto.metadata.feature_names.val, response.proto.results, strict=True
        )
    }
    expected, expected_statuses = _featurelib(repo, store, FEATURES, ROWS)
    for name, values in expected.items():
        assert _same(got[name], values), (name, got[name], values)
        assert statuses[name] == [_feast_status(s) for s in expected_statuses[name]], name
    # not vacuous: aggregations and plain values as of END are there for known entities
    assert got["carrier_flights_1d"][0] > 0
    assert got["route_flights_28d"][0] > 0
    assert got["temp"][0] is not None
    assert got["engine"][0] is not None
    assert got["route_flights_28d"][3] == 0  # count over no events
    assert statuses["temp"][3] == "NOT_FOUND"


def test_feature_service_with_on_demand_features(
    fs: FeatureStore, repo: fl.Repo, store: RedisOnlineStore
) -> None:
    rows = [
        {**row, "scheduled_departure": END - timedelta(hours=h), "distance": 700.0 + h}
        for h, row in enumerate(ROWS[:3], start=1)
    ]
    service = fs.get_feature_service("flight_delay")
    got = fs.get_online_features(features=service, entity_rows=rows).to_dict()
    expected = get_features(store, repo, "flight_delay", rows, at=END).to_dict()
    for name, values in expected.items():
        assert _same(got[name], values), (name, got[name], values)
    assert got["carrier_flights_1d"][0] > 0
    assert None not in got["sched_hour"]  # on-demand, from the request
    assert None not in got["distance_vs_plane_typical"]  # on-demand, from an aggregation


def test_ttl_is_enforced_at_read(fs: FeatureStore, online: tuple[Path, str]) -> None:
    """weather_at_origin has a 3h TTL: a day after END its rows are OUTSIDE_MAX_AGE in
    featurelib, which Feast reports as NOT_FOUND (Feast's own read path has no TTL check)."""
    later = fs.config.model_copy(deep=True)
    later.online_store.read_at = END + timedelta(days=1)
    table = fs.get_feature_view("weather_at_origin")
    keys = [_entity_key("origin", "EWR")]
    rows = FeaturelibOnlineStore().online_read(later, table, keys, ["temp"])
    assert rows == [(None, None)]
    stamp, values = FeaturelibOnlineStore().online_read(fs.config, table, keys, ["temp"])[0]
    assert values is not None
    assert stamp is not None
    assert END - timedelta(hours=3) < stamp <= END


def _entity_key(name: str, value: str) -> Any:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey(join_keys=[name], entity_values=[Value(string_val=value)])


def test_write_to_online_store_writes_plain_rows(
    fs: FeatureStore, repo: fl.Repo, store: RedisOnlineStore
) -> None:
    frame = pl.DataFrame(
        {
            "tailnum": ["NTEST1"],
            "year_built": [2001],
            "seats": [180],
            "engine": ["Turbo-jet"],
            "event_timestamp": [END - timedelta(days=1)],
        }
    ).to_pandas()
    fs.write_to_online_store("plane_info", frame)
    rows = [{"tailnum": "NTEST1"}]
    got = fs.get_online_features(
        features=["plane_info:seats", "plane_info:engine"], entity_rows=rows
    )
    assert got.to_dict()["seats"] == [180]
    expected, _ = _featurelib(repo, store, ["plane_info:seats", "plane_info:engine"], rows)
    assert expected == {"seats": [180], "engine": ["Turbo-jet"]}


def _route_key(origin: str, dest: str) -> Any:
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    return EntityKey(
        join_keys=["dest", "origin"],  # Feast's order, not the entity's: read by name
        entity_values=[Value(string_val=dest), Value(string_val=origin)],
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_feast_serve(online: tuple[Path, str], repo: fl.Repo, store: RedisOnlineStore) -> None:
    path, _ = online
    port = _free_port()
    server = subprocess.Popen(
        [FEAST, "serve", "-p", str(port), "--no-access-log"],
        cwd=path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 40
        while True:
            try:
                with urllib.request.urlopen(f"{base}/health", timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
            assert time.monotonic() < deadline, "feast serve did not start"
            time.sleep(0.2)
        entities = {k: [r[k] for r in ROWS] for k in ROWS[0]}
        body = json.dumps({"features": FEATURES, "entities": entities}).encode()
        request = urllib.request.Request(
            f"{base}/get-online-features",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as reply:
            answer = json.load(reply)
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    names = answer["metadata"]["feature_names"]
    got = {n: r["values"] for n, r in zip(names, answer["results"], strict=True)}
    expected, _ = _featurelib(repo, store, FEATURES, ROWS)
    for name, values in expected.items():
        assert _same(got[name], values), (name, got[name], values)


def test_materialize_incremental(
    online: tuple[Path, str],
    fs: FeatureStore,
    repo: fl.Repo,
    store: RedisOnlineStore,
    feast_cli: Callable[..., subprocess.CompletedProcess[str]],
) -> None:
    """`feast materialize-incremental` continues from the last end (Feast's interval and
    featurelib's state agree); reads as of the new end equal featurelib's."""
    path, url = online
    later = END + timedelta(days=2)
    run = feast_cli(path, "materialize-incremental", later.isoformat(), env={"REDIS_URL": url})
    assert run.returncode == 0, run.stdout + run.stderr
    assert f"from {END}" in run.stdout.replace("\x1b[1m\x1b[32m", "").replace("\x1b[0m", "")
    assert last_materialized(store, _stored(repo, "route_delays")) == later
    config = fs.config.model_copy(deep=True)
    config.online_store.read_at = later
    table = fs.get_feature_view("route_delays")
    keys = [_route_key("EWR", "ORD"), _route_key("JFK", "LAX")]
    rows = FeaturelibOnlineStore().online_read(config, table, keys, ["route_flights_1d"])
    got = [None if v is None else v["route_flights_1d"].int64_val for _, v in rows]
    expected, _ = _featurelib_at(
        repo,
        store,
        ["route_delays:route_flights_1d"],
        [{"origin": "EWR", "dest": "ORD"}, {"origin": "JFK", "dest": "LAX"}],
        later,
    )
    assert got == expected["route_flights_1d"]
    assert got[0] is not None
    assert got[0] > 0


def test_incremental_first_run_on_old_data_starts_like_featurelib(
    fs: FeatureStore, repo: fl.Repo, store: RedisOnlineStore
) -> None:
    """Feast's first-run start (now - TTL) is after the end on 2013 data: the provider starts
    where featurelib's incremental materialization would (end - TTL) instead."""
    from featurelib.feast.provider import FeaturelibProvider

    view = _stored(repo, "weather_at_origin")
    delete_view_data(store, view)
    assert last_materialized(store, view) is None
    table = fs.get_feature_view("weather_at_origin")
    now = datetime.now(UTC)
    FeaturelibProvider(fs.config).materialize_single_feature_view(
        fs.config, table, now - timedelta(hours=3), END, fs.registry, fs.project, lambda n: None
    )
    assert last_materialized(store, view) == END
    _, statuses = _featurelib(repo, store, ["weather_at_origin:temp"], [{"origin": "EWR"}])
    assert statuses["temp"] == ["PRESENT"]


def test_teardown_deletes_the_views_keys(
    fs: FeatureStore, repo: fl.Repo, store: RedisOnlineStore
) -> None:
    """Deletes origin_delays' keys: no later test in this module reads that view."""
    view = _stored(repo, "origin_delays")
    pattern = layout.aggregation_key(store.project, view.name, view.version, "*")
    assert list(store.client.scan_iter(match=pattern))
    FeaturelibOnlineStore().teardown(fs.config, [fs.get_feature_view("origin_delays")], [])
    assert not list(store.client.scan_iter(match=pattern))
    assert last_materialized(store, view) is None
    other = _stored(repo, "carrier_delays")
    other_pattern = layout.aggregation_key(store.project, other.name, other.version, "*")
    assert list(store.client.scan_iter(match=other_pattern))  # other views untouched
    assert delete_view_data(store, view) == 0


def test_online_write_batch_recomputes_aggregation_blocks(
    fs: FeatureStore, repo: fl.Repo, store: RedisOnlineStore
) -> None:
    """Rows written to an aggregation view (other providers, pushes) cannot become blocks:
    the batch's entities get their blocks recomputed from the source up to the rows' time."""
    features = ["carrier_delays:carrier_flights_7d", "carrier_delays:carrier_arr_delay_std_28d"]
    rows = [{"carrier": "UA"}, {"carrier": "AA"}]
    view = _stored(repo, "carrier_delays")
    at = last_materialized(store, view)  # reads at t are exact once materialized up to t
    assert at is not None
    before, _ = _featurelib_at(repo, store, features, rows, at)
    assert before["carrier_flights_7d"][0] > 0
    delete_view_data(store, view)
    table = fs.get_feature_view("carrier_delays")
    batch: list[tuple[Any, dict[str, Any], datetime, datetime | None]] = [
        (_entity_key("carrier", "UA"), {}, at, None)
    ]
    FeaturelibOnlineStore().online_write_batch(fs.config, table, batch, None)
    after, _ = _featurelib_at(repo, store, features, rows, at)
    assert after["carrier_flights_7d"] == [before["carrier_flights_7d"][0], 0]  # only UA
    assert _same(after["carrier_arr_delay_std_28d"][0], before["carrier_arr_delay_std_28d"][0])
