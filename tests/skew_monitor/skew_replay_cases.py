"""A tiny feature repo (users, purchases, profiles) with generated data, and feature-log frames
in the serving/CONTRACT.md layout, for the replay, report and injected-skew tests.

Timeline: training rows (the drift reference) live in [Jan 2, Jan 20); logged requests in
[Jan 21, Jan 25). Profiles are rewritten on Jan 1, Jan 10 and Jan 20, so a request after
Jan 20 served from an older row is a stale materialization.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

import featurelib as fl
from featurelib.repo import Repo

T0 = datetime(2024, 1, 1, tzinfo=UTC)
LOG_START = datetime(2024, 1, 21, tzinfo=UTC)
LOG_END = datetime(2024, 1, 25, tzinfo=UTC)
USERS = [f"u{i}" for i in range(400)]
TIERS = ["bronze", "silver", "gold"]
KEY_COLS = ["user_id"]
FIELD_COLS = ["req_amount"]


def definitions(tax: float = 1.2) -> list[object]:
    """Entities, sources, views and the `shop` service of the tiny repo (`tax`: the constant
    of the on-demand `amount_with_tax`; another value is another service version)."""
    user = fl.Entity("user", {"user_id": fl.String})
    purchases = fl.ParquetSource(
        "purchases",
        "data/purchases.parquet",
        timestamp_field="ts",
        schema={
            "user_id": fl.String,
            "ts": fl.Timestamp,
            "amount": fl.Float64,
            "minutes": fl.Float64,
        },
    )
    profiles = fl.ParquetSource(
        "profiles",
        "data/profiles.parquet",
        timestamp_field="ts",
        schema={"user_id": fl.String, "ts": fl.Timestamp, "tier": fl.String, "score": fl.Float64},
    )
    request = fl.RequestSource("checkout", {"req_amount": fl.Float64})
    profile = fl.FeatureView(
        "profile", [user], profiles, {"tier": fl.col("tier"), "score": fl.col("score")}
    )
    spend = fl.AggregationView(
        "spend",
        [user],
        purchases,
        [
            fl.sum("amount").windows("7d", name="amount_sum"),
            fl.count().windows("7d", name="purchases"),
            fl.mean("minutes").windows("7d", name="session_minutes"),
            fl.last_n("amount", 3).windows("7d", name="recent_amounts"),
        ],
    )
    basket = fl.OnDemandView(
        "basket",
        [request, spend],
        {
            "amount_with_tax": fl.col("req_amount") * tax,
            "amount_vs_week": fl.col("req_amount") / (fl.col("amount_sum_7d") + 1.0),
        },
    )
    service = fl.FeatureService("shop", [profile, spend, basket])
    return [user, purchases, profiles, request, profile, spend, basket, service]


FEATURES = [
    "tier",
    "score",
    "amount_sum_7d",
    "purchases_7d",
    "session_minutes_7d",
    "recent_amounts_7d",
    "amount_with_tax",
    "amount_vs_week",
]


def _purchases(rng: np.random.Generator, n: int = 12000) -> pl.DataFrame:
    seconds = rng.uniform(0, (LOG_END - T0).total_seconds(), n)
    return pl.DataFrame(
        {
            "user_id": rng.choice(USERS, n),
            "ts": [T0 + timedelta(seconds=float(s)) for s in seconds],
            "amount": np.round(rng.lognormal(3.0, 0.6, n), 2),
            "minutes": np.round(rng.uniform(5, 90, n), 1),
        }
    ).with_columns(pl.col("ts").dt.cast_time_unit("us"))


def _profiles(rng: np.random.Generator) -> pl.DataFrame:
    parts = []
    for day in (1, 10, 20):
        parts.append(
            pl.DataFrame(
                {
                    "user_id": USERS,
                    "ts": [T0 + timedelta(days=day - 1, hours=1)] * len(USERS),
                    "tier": rng.choice(TIERS, len(USERS)),
                    "score": np.round(rng.normal(50, 10, len(USERS)), 3),
                }
            )
        )
    return pl.concat(parts).with_columns(pl.col("ts").dt.cast_time_unit("us"))


@dataclass(frozen=True)
class TinyRepo:
    """A tiny repo on disk: root, loaded definitions, and its raw data frames."""

    root: Path
    repo: Repo
    purchases: pl.DataFrame
    profiles: pl.DataFrame

    @property
    def service(self) -> fl.FeatureService:
        return self.repo.service("shop")

    def variant(
        self,
        root: Path,
        *,
        purchases: pl.DataFrame | None = None,
        profiles: pl.DataFrame | None = None,
    ) -> TinyRepo:
        """A copy of this repo at `root` with some source data replaced (what an online store
        fed by different data would have served)."""
        return write_repo(
            root,
            purchases if purchases is not None else self.purchases,
            profiles if profiles is not None else self.profiles,
        )


def write_repo(root: Path, purchases: pl.DataFrame, profiles: pl.DataFrame) -> TinyRepo:
    (root / "data").mkdir(parents=True, exist_ok=True)
    purchases.write_parquet(root / "data" / "purchases.parquet")
    profiles.write_parquet(root / "data" / "profiles.parquet")
    return TinyRepo(root, Repo.from_objects(definitions(), root=root), purchases, profiles)


def build_repo(root: Path, seed: int = 7) -> TinyRepo:
    rng = np.random.default_rng(seed)
    return write_repo(root, _purchases(rng), _profiles(rng))


def spine(
    n: int, start: datetime, end: datetime, seed: int = 11, users: list[str] | None = None
) -> pl.DataFrame:
    """Request rows: user, requested amount and the time features were read at."""
    rng = np.random.default_rng(seed)
    seconds = rng.uniform(0, (end - start).total_seconds(), n)
    return pl.DataFrame(
        {
            "user_id": rng.choice(users or USERS, n),
            "req_amount": np.round(rng.uniform(1, 200, n), 2),
            "feature_time": [start + timedelta(seconds=float(s)) for s in seconds],
        }
    ).with_columns(pl.col("feature_time").dt.cast_time_unit("us"))


def served(tiny: TinyRepo, requests: pl.DataFrame) -> pl.DataFrame:
    """Feature values for `requests` as `tiny`'s data yields them (the offline engine; the
    online == offline promise is tested in tests/online)."""
    return fl.training_set(
        tiny.service, requests, repo=tiny.repo, timestamp_column="feature_time"
    ).select(FEATURES)


def log_frame(
    requests: pl.DataFrame,
    features: pl.DataFrame,
    *,
    service_version: str,
    logged_at: datetime | None = None,
    rows_per_request: int = 4,
    model: str | None = "shop_model",
    model_version: int | None = 1,
) -> pl.DataFrame:
    """Feature-log rows in the contract's column order (request_id, row, logged_at, ...)."""
    n = requests.height
    index = np.arange(n)
    logged = logged_at or datetime.now(UTC) - timedelta(hours=1)
    meta = pl.DataFrame(
        {
            "request_id": [f"req-{i // rows_per_request:05d}" for i in index],
            "row": (index % rows_per_request).astype(np.uint32),
            "logged_at": [logged + timedelta(milliseconds=int(i)) for i in index],
            "feature_time": requests["feature_time"],
            "service": ["shop"] * n,
            "service_version": [service_version] * n,
            "model": [model] * n,
            "model_version": pl.Series([model_version] * n, dtype=pl.Int64),
            "prediction": np.linspace(0.1, 0.9, n),
        }
    ).with_columns(pl.col("logged_at").dt.cast_time_unit("us"))
    statuses = features.select(
        pl.when(pl.col(c).is_null())
        .then(pl.lit("NULL_VALUE"))
        .otherwise(pl.lit("PRESENT"))
        .alias(f"status__{c}")
        for c in features.columns
    )
    return pl.concat(
        [meta, requests.select(*KEY_COLS, *FIELD_COLS), features, statuses], how="horizontal"
    )


def write_log_files(root: Path, logs: pl.DataFrame, service: str = "shop") -> Path:
    """Write `logs` where the flusher puts them: service=<s>/date=<logged_at date>/a-b.parquet."""
    base = root / "data" / "feature_log" / f"service={service}"
    for (day,), part in logs.group_by(pl.col("logged_at").dt.date()):
        directory = base / f"date={day}"
        directory.mkdir(parents=True, exist_ok=True)
        part.write_parquet(directory / "0-0.parquet")
    return base
