"""Property tests: `training_set` equals a brute-force reference of design §3, row by row.

The reference below is written plainly (loop over spine rows, filter events by the rules) so that
it can be checked by eye against the design text.
"""

from __future__ import annotations

import itertools
import math
import statistics
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import featurelib as fl

BASE = datetime(2024, 3, 1, tzinfo=UTC)
K1 = ["a", "b", "c"]
K2 = [1, 2]


@dataclass(frozen=True)
class Event:
    k1: str | None
    k2: int | None
    minute: int
    created: int | None
    x: float | None  # NaN allowed: the engine must read it as null
    y: int | None


def ts(minute: int) -> datetime:
    return BASE + timedelta(minutes=minute)


def is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


# ---------------------------------------------------------------- reference (design §3, plainly)


def order_key(ev: Event, position: int) -> tuple[Any, ...]:
    # Later event time wins; ties: later created (missing created sorts first), then later row.
    created = (-1, 0) if ev.created is None else (0, ev.created)
    return (ev.minute, created, position)


def ref_latest(
    events: list[tuple[int, Event]], keys: dict[str, Any], t: datetime, ttl: timedelta | None
) -> Event | None:
    if any(v is None for v in keys.values()):
        return None
    visible = [
        (pos, ev)
        for pos, ev in events
        if all(getattr(ev, k) == v for k, v in keys.items()) and ts(ev.minute) <= t
    ]
    if not visible:
        return None
    _, best = max(visible, key=lambda pe: order_key(pe[1], pe[0]))
    if ttl is not None and not ts(best.minute) > t - ttl:
        return None
    return best


def floor_time(t: datetime, hop: timedelta) -> datetime:
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    return epoch + ((t - epoch) // hop) * hop


def ref_window(
    events: list[tuple[int, Event]],
    keys: dict[str, Any],
    t: datetime,
    window: timedelta,
    hop: timedelta,
) -> list[tuple[int, Event]]:
    if any(v is None for v in keys.values()):
        return []
    start = floor_time(t, hop) - window
    rows = [
        (pos, ev)
        for pos, ev in events
        if all(getattr(ev, k) == v for k, v in keys.items()) and start <= ts(ev.minute) <= t
    ]
    return sorted(rows, key=lambda pe: order_key(pe[1], pe[0]))


def ref_aggregate(fn: str, rows: list[tuple[int, Event]], k: int = 0) -> Any:
    values = [ev.x for _, ev in rows if not is_missing(ev.x)]
    if fn == "count_rows":
        return len(rows)
    if fn == "count":
        return len(values)
    if fn == "sum":
        return math.fsum(values)
    if fn == "sum_flag":  # sum(x > 0): booleans count their trues, null skipped
        return sum(1 for v in values if v > 0)
    if fn == "mean":
        return math.fsum(values) / len(values) if values else None
    if fn == "min":
        return min(values) if values else None
    if fn == "max":
        return max(values) if values else None
    if fn == "stddev":
        return statistics.stdev(values) if len(values) >= 2 else None
    if fn == "last":
        return values[-1] if values else None
    if fn == "last_n":
        return values[-k:] if values else None
    raise AssertionError(fn)


# ---------------------------------------------------------------- comparison


def close(a: Any, b: Any) -> bool:
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, list) or isinstance(b, list):
        return (
            isinstance(a, list)
            and isinstance(b, list)
            and len(a) == len(b)
            and all(close(x, y) for x, y in zip(a, b))
        )
    if isinstance(a, float) or isinstance(b, float):
        return abs(a - b) <= 1e-9 * max(1.0, abs(a), abs(b))
    return bool(a == b)


# ---------------------------------------------------------------- strategies

floats = st.one_of(
    st.none(),
    st.just(float("nan")),
    st.floats(-1e6, 1e6, allow_nan=False, allow_subnormal=False),
    st.sampled_from([0.0, 1.0, -1.0, 1e6, 1e6 + 0.001]),
)
events_strategy = st.lists(
    st.builds(
        Event,
        k1=st.one_of(st.sampled_from(K1), st.just(None)),
        k2=st.sampled_from(K2),
        minute=st.integers(0, 1500),
        created=st.one_of(st.none(), st.integers(0, 3)),
        x=floats,
        y=st.one_of(st.none(), st.integers(-50, 50)),
    ),
    min_size=0,
    max_size=40,
)


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[Event], list[list[int]], list[tuple[Any, Any, int]]]:
    events = draw(events_strategy)
    # Split into out-of-order files: a permutation, cut into 1-3 files.
    perm = draw(st.permutations(range(len(events))))
    cuts = sorted(draw(st.lists(st.integers(0, len(events)), max_size=2)))
    bounds = [0, *cuts, len(events)]
    files = [list(perm[a:b]) for a, b in itertools.pairwise(bounds)]
    # Spine times: random, plus exact event times and exact TTL edges (ttl = 30 min).
    anchors = [ev.minute for ev in events]
    minute = st.one_of(
        st.integers(0, 1600),
        st.sampled_from(anchors or [0]),
        st.sampled_from([m + 30 for m in anchors] or [0]),
        st.sampled_from([m + 29 for m in anchors] or [0]),
    )
    spine = draw(
        st.lists(
            st.tuples(
                st.one_of(st.sampled_from([*K1, "zz"]), st.none()), st.sampled_from(K2), minute
            ),
            min_size=1,
            max_size=25,
        )
    )
    return events, files, spine


# ---------------------------------------------------------------- definitions under test

K12 = fl.Entity("pair", {"k1": fl.String, "k2": fl.Int64})
K1_ONLY = fl.Entity("first", {"k1": fl.String})
SCHEMA = {
    "k1": fl.String,
    "k2": fl.Int64,
    "ts": fl.Timestamp,
    "created": fl.Timestamp,
    "x": fl.Float64,
    "y": fl.Int64,
}
WINDOWS: list[tuple[str, timedelta, timedelta]] = [
    ("5min", timedelta(minutes=5), timedelta(minutes=1)),
    ("1h", timedelta(hours=1), timedelta(minutes=1)),
    ("2h", timedelta(hours=2), timedelta(minutes=5)),
    ("13h", timedelta(hours=13), timedelta(hours=1)),
]
FUNCTIONS = {
    "count_rows": fl.count(),
    "count": fl.count("x"),
    "sum": fl.sum("x"),
    "sum_flag": fl.sum(fl.col("x") > 0),
    "mean": fl.mean("x"),
    "min": fl.min("x"),
    "max": fl.max("x"),
    "stddev": fl.stddev("x"),
    "last": fl.last("x"),
    "last_n": fl.last_n("x", 3),
}


def build(path: Path) -> fl.FeatureService:
    src = fl.ParquetSource(
        "events", str(path), timestamp_field="ts", created_timestamp_field="created", schema=SCHEMA
    )
    latest = fl.FeatureView(
        "latest",
        [K12],
        src,
        {"x": fl.col("x"), "y": fl.col("y"), "xy": fl.col("x") * 2 + fl.col("y")},
        ttl="30min",
    )
    forever = fl.FeatureView("forever", [K1_ONLY], src, {"y_any": fl.col("y")})
    aggs = fl.AggregationView(
        "aggs",
        [K12],
        src,
        [fn.windows(*[w for w, _, _ in WINDOWS], name=name) for name, fn in FUNCTIONS.items()]
        + [fl.sum("x").windows("30min", hop="10min", name="hop10")],
    )
    req = fl.RequestSource("req", {"boost": fl.Float64})
    od = fl.OnDemandView(
        "od",
        [req, latest, aggs],
        {"boosted": fl.col("x").fill_null(0.0) * fl.col("boost") + fl.col("count_rows_1h")},
    )
    return fl.FeatureService("svc", [latest, forever, aggs, od])


def write_files(
    directory: Path, events: list[Event], files: list[list[int]]
) -> list[tuple[int, Event]]:
    """Write the events as Parquet files; return (source position, event) in read order."""
    directory.mkdir(parents=True, exist_ok=True)
    ordered: list[tuple[int, Event]] = []
    for n, idx in enumerate(files):
        rows = [events[i] for i in idx]
        frame = pl.DataFrame(
            {
                "k1": [e.k1 for e in rows],
                "k2": [e.k2 for e in rows],
                "ts": [ts(e.minute) for e in rows],
                "created": [None if e.created is None else ts(e.created) for e in rows],
                "x": [e.x for e in rows],
                "y": [e.y for e in rows],
            },
            schema={
                "k1": pl.String,
                "k2": pl.Int64,
                "ts": pl.Datetime("us", "UTC"),
                "created": pl.Datetime("ms", "UTC"),
                "x": pl.Float64,
                "y": pl.Int64,
            },
            strict=False,
        )
        frame.write_parquet(directory / f"part-{n:02d}.parquet")
        ordered.extend((len(ordered) + j, ev) for j, ev in enumerate(rows))
    return ordered


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(case=scenario())
def test_training_set_matches_reference(
    tmp_path_factory: pytest.TempPathFactory, case: Any
) -> None:
    events, files, spine_rows = case
    directory = tmp_path_factory.mktemp("events")
    ordered = write_files(directory, events, files)
    svc = build(directory)
    spine = pl.DataFrame(
        {
            "k1": [r[0] for r in spine_rows],
            "k2": [r[1] for r in spine_rows],
            "event_timestamp": [ts(r[2]).replace(tzinfo=None) for r in spine_rows],  # naive = UTC
            "label": list(range(len(spine_rows))),
            "boost": [0.5] * len(spine_rows),
        }
    )
    out = fl.training_set(svc, spine)
    assert out["label"].to_list() == list(range(len(spine_rows)))  # spine order kept, no row lost

    for i, (k1, k2, minute) in enumerate(spine_rows):
        t = ts(minute)
        row = out.row(i, named=True)
        pair = {"k1": k1, "k2": k2}
        latest = ref_latest(ordered, pair, t, timedelta(minutes=30))
        want_x = None if latest is None or is_missing(latest.x) else latest.x
        want_y = None if latest is None else latest.y
        want_xy = None if want_x is None or want_y is None else want_x * 2 + want_y
        any_row = ref_latest(ordered, {"k1": k1}, t, None)
        expected: dict[str, Any] = {
            "x": want_x,
            "y": want_y,
            "xy": want_xy,
            "y_any": None if any_row is None else any_row.y,
        }
        for name in FUNCTIONS:
            for label, window, hop in WINDOWS:
                rows = ref_window(ordered, pair, t, window, hop)
                expected[f"{name}_{label}"] = ref_aggregate(name, rows, k=3)
        expected["hop10_30min"] = ref_aggregate(
            "sum", ref_window(ordered, pair, t, timedelta(minutes=30), timedelta(minutes=10))
        )
        expected["boosted"] = (want_x or 0.0) * 0.5 + expected["count_rows_1h"]
        for name, want in expected.items():
            got = row[name]
            assert close(got, want), f"row {i} {pair} t={t}: {name} = {got!r}, expected {want!r}"


def test_reference_rules_on_a_hand_made_case(tmp_path: Path) -> None:
    """Anchors the property test: a case whose every value is worked out by hand."""
    events = [
        Event("a", 1, 0, None, 1.0, 1),
        Event("a", 1, 10, 1, 2.0, 2),
        Event("a", 1, 10, 2, 3.0, 3),  # same event time, later created: wins ties
        Event("a", 1, 10, 2, None, 4),  # same time and created, later row: wins, x is null
        Event("a", 1, 70, None, float("nan"), 5),
    ]
    ordered = write_files(tmp_path / "ev", events, [[0, 1, 2, 3, 4]])
    svc = build(tmp_path / "ev")
    spine = pl.DataFrame(
        {
            "k1": ["a", "a", "a", None],
            "k2": [1, 1, 1, 1],
            "event_timestamp": [ts(10), ts(40), ts(75), ts(75)],
            "label": [0, 1, 2, 3],
            "boost": [1.0, 1.0, 1.0, 1.0],
        }
    )
    out = fl.training_set(svc, spine)
    assert out["y"].to_list() == [4, None, 5, None]  # 40 is exactly ttl after 10: expired
    assert out["x"].to_list() == [None, None, None, None]  # winning rows have null / NaN x
    assert out["count_rows_1h"].to_list() == [4, 4, 1, 0]  # window [floor(t) - 60min, t]
    assert out["sum_13h"].to_list() == [6.0, 6.0, 6.0, 0.0]
    assert out["last_n_13h"].to_list() == [[1.0, 2.0, 3.0]] * 3 + [None]
    assert out["stddev_13h"][0] == pytest.approx(1.0)
    assert out["mean_13h"].to_list()[:3] == [2.0, 2.0, 2.0]
    assert out["y_any"].to_list() == [4, 4, 5, None]
    assert ordered[3][1].y == 4
