"""Demo stream: "new" flights (the last demo day's flights, one day later) sent to a Redis Stream.

Each entry's `data` field is one flight outcome as JSON, in the format `featurelib stream`
consumes. Event ids carry a run id, so every demo run pushes fresh events.
"""

from __future__ import annotations

import json
import time
from datetime import timedelta
from pathlib import Path

import polars as pl
import redis

SHIFT = timedelta(days=1)


def new_flights(data_dir: Path, count: int) -> pl.DataFrame:
    """The last `count` flights (by event time) of the demo data, shifted one day later."""
    flights = pl.read_parquet(data_dir / "flights", hive_partitioning=True)
    shifted = ("scheduled_departure", "event_timestamp", "created_timestamp")
    return (
        flights.sort("event_timestamp")
        .tail(count)
        .drop("month", "scheduled_arrival", strict=False)
        .with_columns([pl.col(c) + SHIFT for c in shifted])
    )


def send(client: redis.Redis, stream: str, flights: pl.DataFrame, run_id: str) -> int:
    """XADD one entry per flight (pipelined); returns the number sent."""
    pipe = client.pipeline(transaction=False)
    for row in flights.iter_rows(named=True):
        event = {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in row.items()}
        event["event_id"] = f"demo-{run_id}-{row['flight_id']}"
        pipe.xadd(stream, {"data": json.dumps(event)})
    pipe.execute()
    return flights.height


def run_id() -> str:
    return time.strftime("%Y%m%dT%H%M%S")
