"""Champion/challenger routing (share, stickiness by entity-key hash, agreement between the
in-process Router and the running service) and shadow scoring (scored off the response path,
never changing an answer)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import polars as pl
import pytest
from serve_support import (
    MODEL,
    ROWS,
    ServerProcess,
    expected_predictions,
    infer_body,
    metric_value,
)

from featurelib.online.testing import RedisProcess
from serving.routing import Router, ShadowPool, key_fraction

KEYS = ["carrier", "origin", "dest", "tailnum"]  # the model's key columns, signature order
FRACTION = 0.3196531368917878  # key_fraction of UA/EWR/ORD/N14228


def test_share_and_stickiness_of_the_split() -> None:
    keys = [(f"C{i % 17}", f"O{i}", "DST", f"N{i:05d}") for i in range(2000)]
    router = Router(champion=1, challenger=2, share=0.2)
    first = [router.route(k).version for k in keys]
    assert first == [router.route(k).version for k in keys]  # sticky
    share = first.count(2) / len(keys)
    assert share == pytest.approx(0.2, abs=0.03)
    smaller = Router(1, 2, 0.1)
    moved = {k for k in keys if smaller.route(k).version == 2}
    assert moved <= {k for k, v in zip(keys, first, strict=True) if v == 2}  # nested splits
    assert {Router(1, None, 0.5).route(k).version for k in keys} == {1}  # no challenger
    assert {Router(1, 2, 0.0).route(k).arm for k in keys} == {"champion"}
    # blake2b, not Python's per-process salted hash: the same on every replica and restart
    assert key_fraction(["UA", "EWR", "ORD", "N14228"]) == pytest.approx(FRACTION, abs=1e-15)


def test_logged_sample_holds_both_arms_in_their_routed_shares() -> None:
    """The log's sampling hash and the routing hash are independent: with log rate = share,
    the logged entities are not all challenger traffic."""
    from serving.feature_log import sampled

    keys = [(f"C{i % 17}", f"O{i}", "DST", f"N{i:05d}") for i in range(20_000)]
    router = Router(champion=1, challenger=2, share=0.1)
    logged = [router.route(k).version for k in keys if sampled(k, 0.1)]
    assert len(logged) == pytest.approx(2000, rel=0.1)
    assert logged.count(2) / len(logged) == pytest.approx(0.1, abs=0.03)


def test_shadow_pool_is_bounded_and_drops_overflow() -> None:
    dropped: list[int] = []
    pool = ShadowPool(2, on_drop=lambda: dropped.append(1))
    release = threading.Event()
    accepted = [pool.submit(release.wait) for _ in range(5)]
    assert accepted == [True, True, False, False, False]
    assert len(dropped) == 3
    release.set()
    pool.close(wait=True)
    assert pool.submit(lambda: None) is False


@pytest.fixture(scope="module")
def routed_server(
    serving_repo: Path,
    serving_redis: RedisProcess,
    trained_registry: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    config = {
        "routing": {"share": 0.5},
        "shadow": {"refs": [{"model": MODEL, "ref": "3"}], "sample_rate": 1.0},
        "log_sample_rate": 0.0,
    }
    with ServerProcess(
        serving_repo,
        redis_url=serving_redis.url,
        registry_url=f"sqlite:///{trained_registry}",
        config=config,
        log_dir=tmp_path_factory.mktemp("routing"),
    ) as server:
        yield server


def test_service_routes_like_the_router_and_sticks(
    routed_server: ServerProcess, serving_repo: Path
) -> None:
    spine = pl.read_parquet(serving_repo / "data" / "spine.parquet").head(3000)
    entities = spine.select(KEYS).unique(maintain_order=True).drop_nulls().head(30).rows()
    router = Router(1, 2, 0.5)
    seen = set()
    with httpx.Client(base_url=routed_server.base_url, timeout=10) as http:
        for _ in range(2):
            for key in entities:
                row = {**dict(zip(KEYS, key, strict=True)), **{k: ROWS[0][k] for k in
                       ("scheduled_departure", "distance")}}  # fmt: skip
                answer = http.post(f"/v2/models/{MODEL}/infer", json=infer_body([row])).json()
                route = router.route(key)
                assert answer["model_version"] == str(route.version), key
                assert answer["parameters"]["route"] == route.arm
                seen.add(route.version)
    assert seen == {1, 2}


def test_shadow_never_changes_the_answer(
    routed_server: ServerProcess,
    serving_repo: Path,
    serving_redis: RedisProcess,
    trained_registry: Path,
) -> None:
    with httpx.Client(base_url=routed_server.base_url, timeout=10) as http:
        before = metric_value(
            http.get("/metrics").text,
            "featurelib_serve_shadow_total",
            model_version="3",
            outcome="scored",
        )
        for row in ROWS:
            answer = http.post(f"/v2/models/{MODEL}/infer", json=infer_body([row])).json()
            version = int(answer["model_version"])
            assert version in (1, 2)  # the shadow version never answers
            reference = expected_predictions(
                serving_repo, serving_redis.url, trained_registry, version, [row]
            )
            assert answer["outputs"][0]["data"] == pytest.approx(reference, abs=1e-12)
        deadline = time.monotonic() + 10
        scored = before
        while scored < before + len(ROWS) and time.monotonic() < deadline:
            time.sleep(0.05)
            scored = metric_value(
                http.get("/metrics").text,
                "featurelib_serve_shadow_total",
                model_version="3",
                outcome="scored",
            )
    assert scored == before + len(ROWS)
