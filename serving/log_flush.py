"""Feature-log entries: their msgpack payload, and the flusher that moves them from the Redis
Stream buffer to date-partitioned Parquet.

Payload (stream field `d`, one entry per served request): a msgpack map

    v    format version (1)            rid  request id          n   rows in the request
    at   logged_at, epoch us (UTC)     ft   feature_time, epoch us
    svc  service                       sv   service version
    m    model (or nil)                mv   model version (or nil)
    p    predictions (list, or nil)     dg   degraded: default values served, store down
                                       (absent in older entries: false)
    c    columns: [[name, dtype, values], ...]  entity keys and request fields, then features,
         then `status__<feature>` columns
    l    layout id: a hash of the columns' names and dtypes (entries sharing it are decoded
         together)

`dtype` is a small nested list (`["Int64"]`, `["Datetime", "us", "UTC"]`, `["List", [...]]`);
temporal values travel as their physical integers in microseconds (dates: days), so the
Parquet files get exactly the dtypes that were served.

Flushing (`LogFlusher.flush`) reads each service's stream with the consumer group
`featurelib-log` (first this consumer's own pending entries, then entries other consumers left
pending for `claim_idle_ms` (XAUTOCLAIM), then new ones), writes one Parquet file per
`logged_at` date and batch, atomically (temporary name, fsync, rename) to
`<root>/data/feature_log/service=<s>/date=YYYY-MM-DD/<first id>-<last id>.parquet`, and only
then acknowledges and deletes the entries (XACK + XDEL in one MULTI). A crash between the
write and the acknowledgement leaves the entries pending: the next flush writes them again
(under the same file name when the batch is the same; otherwise `read_logs` drops the
duplicates on (request_id, row)). At-least-once, never lost.
"""

from __future__ import annotations

import gc
import hashlib
import os
import socket
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import polars as pl
import redis

from featurelib.offline.io import write_parquet_atomically

FORMAT_VERSION = 1
GROUP = "featurelib-log"
STATUS_PREFIX = "status__"
META_SCHEMA: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "row": pl.UInt32(),
    "logged_at": pl.Datetime("us", "UTC"),
    "feature_time": pl.Datetime("us", "UTC"),
    "service": pl.String(),
    "service_version": pl.String(),
    "model": pl.String(),
    "model_version": pl.Int64(),
    "prediction": pl.Float64(),
    "degraded": pl.Boolean(),
}
RESERVED = frozenset(META_SCHEMA)
Hook = Callable[[str], None]

_SIMPLE: dict[str, pl.DataType] = {
    name: getattr(pl, name)()
    for name in [
        "Int8",
        "Int16",
        "Int32",
        "Int64",
        "UInt8",
        "UInt16",
        "UInt32",
        "UInt64",
        "Float32",
        "Float64",
        "Boolean",
        "String",
        "Date",
        "Time",
        "Null",
        "Binary",
    ]
}


def stream_key(project: str, service: str) -> str:
    """The Redis Stream buffering `service`'s log entries."""
    return f"fl:{project}:log:{service}"


def log_dir(root: Path) -> Path:
    """Where flushed logs (and the spill directory) live."""
    return Path(root) / "data" / "feature_log"


# ----------------------------------------------------------------------------- dtypes


def dtype_spec(dtype: pl.DataType) -> list[Any]:
    """A msgpack-able description of the (normalized) dtype a column is logged with."""
    if isinstance(dtype, pl.Datetime):
        return ["Datetime", "us", dtype.time_zone]
    if isinstance(dtype, pl.Duration):
        return ["Duration", "us"]
    if isinstance(dtype, pl.List | pl.Array):
        inner = dtype.inner
        return ["List", dtype_spec(inner() if isinstance(inner, type) else inner)]
    name = type(dtype).__name__
    if name in _SIMPLE:
        return [name]
    if isinstance(dtype, pl.Decimal):
        return ["Float64"]
    return ["String"]  # Categorical, Enum, Struct, Object: logged as text


def spec_dtype(spec: Sequence[Any]) -> pl.DataType:
    """The dtype `dtype_spec` described."""
    kind = spec[0]
    if kind == "Datetime":
        return pl.Datetime("us", spec[2])
    if kind == "Duration":
        return pl.Duration("us")
    if kind == "List":
        return pl.List(spec_dtype(spec[1]))
    return _SIMPLE[kind]


def _physical(spec: Sequence[Any]) -> pl.DataType:
    kind = spec[0]
    if kind in ("Datetime", "Duration", "Time"):
        return pl.Int64()
    if kind == "Date":
        return pl.Int32()
    if kind == "List":
        return pl.List(_physical(spec[1]))
    return spec_dtype(spec)


def encode_column(series: pl.Series) -> list[Any]:
    """`[name, dtype spec, values]` of one column (temporal values as physical integers)."""
    spec = dtype_spec(series.dtype)
    target = spec_dtype(spec)
    if series.dtype != target:
        series = series.cast(target, strict=False)
    return [series.name, spec, series.to_physical().to_list()]


_SPECS: dict[tuple[Any, ...], tuple[list[list[Any]], list[pl.Expr], str]] = {}


def layout_id(names_and_specs: Sequence[Any]) -> str:
    """A short stable id of a column layout (names and dtypes)."""
    return hashlib.blake2b(repr(names_and_specs).encode(), digest_size=8).hexdigest()


def encode_frame(frame: pl.DataFrame) -> tuple[list[list[Any]], str]:
    """`encode_column` of every column of `frame` in one pass, and the layout's id (the
    per-schema work, casts to physical form and the id, is cached)."""
    key = tuple(frame.schema.items())
    cached = _SPECS.get(key)
    if cached is None:
        specs: list[list[Any]] = []
        casts: list[pl.Expr] = []
        for name, dtype in key:
            spec = dtype_spec(dtype)
            specs.append([name, spec])
            target = spec_dtype(spec)
            if dtype != target or _physical(spec) != target:
                casts.append(pl.col(name).cast(target, strict=False).to_physical())
        if len(_SPECS) > 1024:  # ad-hoc schemas: keep the cache bounded
            _SPECS.clear()
        cached = _SPECS[key] = (specs, casts, layout_id(specs))
    data = (frame.with_columns(cached[1]) if cached[1] else frame).to_dict(as_series=False)
    return [[column, spec, data[column]] for column, spec in cached[0]], cached[2]


def decode_column(name: str, spec: Sequence[Any], values: list[Any]) -> pl.Series:
    """The column `encode_column` encoded."""
    physical = pl.Series(name, values, dtype=_physical(spec), strict=False)
    return physical.cast(spec_dtype(spec))


# ----------------------------------------------------------------------------- payload


def encode_entry(
    *,
    request_id: str,
    logged_at_us: int,
    feature_time_us: int,
    service: str,
    service_version: str,
    model: str | None,
    model_version: int | None,
    rows: int,
    predictions: list[float | None] | None,
    columns: list[list[Any]],
    layout: str | None = None,
    degraded: bool = False,
) -> bytes:
    """The msgpack payload of one log entry (see the module docstring)."""
    packed: bytes = msgpack.packb(
        {
            "v": FORMAT_VERSION,
            "rid": request_id,
            "at": logged_at_us,
            "ft": feature_time_us,
            "svc": service,
            "sv": service_version,
            "m": model,
            "mv": model_version,
            "n": rows,
            "p": predictions,
            "c": columns,
            "dg": degraded,
            "l": layout or layout_id([[name, spec] for name, spec, _ in columns]),
        },
        use_bin_type=True,
    )
    return packed


def decode_entry(data: bytes) -> dict[str, Any]:
    entry: dict[str, Any] = msgpack.unpackb(data, raw=False)
    if entry.get("v") != FORMAT_VERSION:
        raise ValueError(f"unknown feature-log payload version {entry.get('v')!r}")
    return entry


def _day(logged_at_us: int) -> str:
    return datetime.fromtimestamp(logged_at_us / 1_000_000, UTC).strftime("%Y-%m-%d")


def entries_frame(entries: Sequence[dict[str, Any]]) -> pl.DataFrame:
    """Decoded entries as log rows in the contract's column order (entries may differ in
    columns: a service version change adds or removes features)."""
    by_layout: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in entries:
        by_layout[entry["l"]].append(entry)
    parts = [_same_layout_frame(group) for group in by_layout.values()]
    frame = pl.concat(parts, how="diagonal_relaxed") if len(parts) > 1 else parts[0]
    statuses = [c for c in frame.columns if c.startswith(STATUS_PREFIX)]
    data = [c for c in frame.columns if c not in RESERVED and c not in statuses]
    return frame.select(*META_SCHEMA, *data, *statuses)


def _same_layout_frame(entries: list[dict[str, Any]]) -> pl.DataFrame:
    counts = np.array([e["n"] for e in entries], dtype=np.int64)

    def repeat(key: str) -> list[Any]:
        return np.repeat(np.array([e[key] for e in entries], dtype=object), counts).tolist()

    predictions: list[Any] = []
    for entry, n in zip(entries, counts.tolist(), strict=True):
        predictions.extend(entry["p"] if entry["p"] is not None else [None] * n)
    rows = np.concatenate([np.arange(n, dtype=np.uint32) for n in counts.tolist()])
    meta = [
        pl.Series("request_id", repeat("rid"), dtype=pl.String),
        pl.Series("row", rows, dtype=pl.UInt32),
        pl.Series("logged_at", repeat("at"), dtype=pl.Int64).cast(META_SCHEMA["logged_at"]),
        pl.Series("feature_time", repeat("ft"), dtype=pl.Int64).cast(META_SCHEMA["logged_at"]),
        pl.Series("service", repeat("svc"), dtype=pl.String),
        pl.Series("service_version", repeat("sv"), dtype=pl.String),
        pl.Series("model", repeat("m"), dtype=pl.String),
        pl.Series("model_version", repeat("mv"), dtype=pl.Int64),
        pl.Series("prediction", predictions, dtype=pl.Float64, strict=False),
        pl.Series(
            "degraded",
            np.repeat(np.array([bool(e.get("dg", False)) for e in entries]), counts),
            dtype=pl.Boolean,
        ),
    ]
    columns = []
    for i, (name, spec, _) in enumerate(entries[0]["c"]):
        values: list[Any] = []
        for entry in entries:
            values.extend(entry["c"][i][2])
        columns.append(decode_column(name, spec, values))
    return pl.DataFrame([*meta, *columns])


# ----------------------------------------------------------------------------- flusher


@dataclass
class FlushResult:
    """What one flush of one service's stream did."""

    service: str
    entries: int = 0  # stream entries written (and acknowledged)
    rows: int = 0  # log rows written
    files: list[Path] = field(default_factory=list)
    bad: int = 0  # undecodable entries, moved to the `<stream>:dead` stream


def default_consumer() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class LogFlusher:
    """Moves buffered log entries of every service from Redis Streams to Parquet (see module
    docstring). `hook("written")` runs after the Parquet files of a batch are written and
    before they are acknowledged: a seam for crash tests."""

    def __init__(
        self,
        root: Path,
        client: redis.Redis,
        project: str,
        *,
        consumer: str | None = None,
        batch_size: int = 5000,
        claim_idle_ms: int = 60_000,
        hook: Hook | None = None,
    ) -> None:
        self.root = Path(root)
        self.client = client
        self.project = project
        self.consumer = consumer or default_consumer()
        self.batch_size = batch_size
        self.claim_idle_ms = claim_idle_ms
        self.hook = hook
        self._groups: set[str] = set()

    def services(self) -> list[str]:
        """Services that have a log stream in Redis."""
        prefix = stream_key(self.project, "")
        keys = self.client.scan_iter(match=f"{prefix}*", count=1000, _type="STREAM")
        names = {(k.decode() if isinstance(k, bytes) else str(k))[len(prefix) :] for k in keys}
        return sorted(n for n in names if n and not n.endswith(":dead"))

    def flush(self, services: Iterable[str] | None = None) -> list[FlushResult]:
        """Flush every service's stream (default: all found in Redis) until it is empty."""
        return [self.flush_service(s) for s in (self.services() if services is None else services)]

    def flush_service(self, service: str) -> FlushResult:
        key = stream_key(self.project, service)
        result = FlushResult(service)
        try:
            return self._flush_stream(key, service, result)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            # The stream was recreated without our group (Redis restarted empty, the key was
            # deleted or evicted, then a logger's XADD made it again): create it and go on.
            self._groups.discard(key)
            return self._flush_stream(key, service, result)

    def _flush_stream(self, key: str, service: str, result: FlushResult) -> FlushResult:
        self._ensure_group(key)
        # Own pending entries first (a crash between write and ack: same batch, same file),
        # then abandoned ones of other consumers, then new ones.
        while batch := self._read(key, "0"):
            self._write(key, service, batch, result)
        cursor: bytes | str = "0-0"
        while True:
            reply: Any = self.client.xautoclaim(
                key, GROUP, self.consumer, self.claim_idle_ms, cursor, count=self.batch_size
            )
            cursor, claimed = reply[0], reply[1]
            if claimed:
                self._write(key, service, [(i, f or None) for i, f in claimed], result)
            if cursor in (b"0-0", "0-0"):
                break
        while batch := self._read(key, ">"):
            self._write(key, service, batch, result)
        return result

    def _ensure_group(self, key: str) -> None:
        if key in self._groups:
            return
        try:
            self.client.xgroup_create(key, GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._groups.add(key)

    def _read(self, key: str, start: str) -> list[tuple[bytes, dict[bytes, bytes] | None]]:
        reply: Any = self.client.xreadgroup(
            GROUP, self.consumer, {key: start}, count=self.batch_size
        )
        out: list[tuple[bytes, dict[bytes, bytes] | None]] = []
        for _, entries in reply or []:
            out += [(entry_id, fields or None) for entry_id, fields in entries]
        return out

    def _write(
        self,
        key: str,
        service: str,
        batch: list[tuple[bytes, dict[bytes, bytes] | None]],
        result: FlushResult,
    ) -> None:
        # Decoding builds many small containers, all alive until the frame is built: the
        # cyclic GC would rescan them over and over (quadratic); reference counting frees them.
        paused = gc.isenabled()
        gc.disable()
        try:
            dead = self._write_files(service, batch, result)
        finally:
            if paused:
                gc.enable()
        if self.hook is not None:
            self.hook("written")
        ids = [entry_id for entry_id, _ in batch]
        pipe = self.client.pipeline(transaction=True)
        for entry_id, raw, reason in dead:
            pipe.xadd(f"{key}:dead", {"d": raw, "reason": reason, "original_id": entry_id})
        pipe.xack(key, GROUP, *ids)
        pipe.xdel(key, *ids)
        pipe.execute()
        result.bad += len(dead)

    def _write_files(
        self,
        service: str,
        batch: list[tuple[bytes, dict[bytes, bytes] | None]],
        result: FlushResult,
    ) -> list[tuple[bytes, bytes, str]]:
        """Write the batch's Parquet files (one per `logged_at` date and column layout: a
        service version may change a feature's type, which no single file can hold); return
        the undecodable entries."""
        by_day: dict[tuple[str, str], list[tuple[bytes, dict[str, Any]]]] = defaultdict(list)
        dead: list[tuple[bytes, bytes, str]] = []
        for entry_id, fields in batch:
            raw = None if fields is None else fields.get(b"d")
            if raw is None:
                if fields is not None:
                    dead.append((entry_id, b"", "entry has no 'd' field"))
                continue  # deleted while pending: nothing to write
            try:
                entry = decode_entry(raw)
            except (ValueError, msgpack.UnpackException, TypeError) as exc:
                dead.append((entry_id, raw, f"undecodable payload: {exc}"))
                continue
            by_day[(_day(entry["at"]), str(entry["l"]))].append((entry_id, entry))
        directory = log_dir(self.root) / f"service={service}"
        for (day, _), items in sorted(by_day.items()):
            frame = entries_frame([entry for _, entry in items])
            name = f"{items[0][0].decode()}-{items[-1][0].decode()}.parquet"
            path = directory / f"date={day}" / name
            write_parquet_atomically(frame, path, what="feature log")
            result.files.append(path)
            result.rows += frame.height
            result.entries += len(items)
        return dead
