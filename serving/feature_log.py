"""Feature logging: every served request's keys, request fields, feature values and statuses,
model version and predictions, buffered in Redis and flushed to date-partitioned Parquet.

    logger = FeatureLogger(root, store, definitions=live, sample_rate=1.0)
    logger.log(request_id, logged_at, feature_time, service, service_version,
               model, model_version, inputs, response, predictions)    # one XADD
    logger.close()                                  # final replay + flush (graceful shutdown)
    read_logs(root, "flight_delay", since, until)   # flushed rows, de-duplicated

Buffer: one Redis Stream per service, `fl:<project>:log:<service>`, one entry per request
(payload: `serving.log_flush`); `log()` costs about 0.5 ms for a one-row request of the
68-feature demo service (encoding + one XADD round trip). Sampling keeps a request when the
blake2b hash of its first row's entity key values falls below `sample_rate`, so an entity is
either always or never logged (rate 1.0 logs everything without hashing).

Redis unavailable: `log()` never raises and never waits long. Its client has short timeouts
and no retries; the first failure switches the logger to spilling: entries are appended to
`<root>/data/feature_log/_spill/<time>-<host>-<pid>-<n>.spill` (4-byte big-endian length +
msgpack `[stream key, payload]` per record) and fsynced before `log()` returns, so an entry
the caller handed over survives a crash of this process too. One fsync per entry is
affordable because spilling is rare and small: the buffer is the online store's Redis, so
while it is down only requests answered in degraded mode (configured default values) are
served and logged. Each process holds an exclusive `flock` on its open spill file. The
background thread PINGs Redis every `retry_interval_s`; once it answers, new entries go to
Redis again and every spill file nobody holds (ours, or left by a crashed process) is
replayed into its stream and deleted only after all its records are in Redis. A crash during
replay replays the file again: at-least-once; `read_logs` de-duplicates on (request_id, row).

Flushing: the same thread runs `LogFlusher` every `flush_interval_s` (None: never; use
`featurelib logs flush` from cron instead); `close()` replays and flushes one last time.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from itertools import count
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import polars as pl
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from featurelib.durations import epoch_micros
from featurelib.online.live import LiveDefinitions
from featurelib.online.read import OnlineResponse
from featurelib.online.store import RedisOnlineStore
from featurelib.repo import Repo
from featurelib.views import AggregationView, FeatureView, OnDemandView
from serving.log_flush import (
    META_SCHEMA,
    RESERVED,
    STATUS_PREFIX,
    FlushResult,
    LogFlusher,
    encode_entry,
    encode_frame,
    layout_id,
    log_dir,
    stream_key,
)
from serving.routing import key_fraction

__all__ = ["FeatureLogger", "LoggerStats", "read_logs", "sampled", "service_keys", "spill_dir"]

_LENGTH = struct.Struct(">I")
Log = Callable[[str], None]


def _stderr(message: str) -> None:
    print(f"featurelib feature-log: {message}", file=sys.stderr, flush=True)


def spill_dir(root: Path) -> Path:
    return log_dir(root) / "_spill"


def sampled(key_values: Sequence[Any], rate: float) -> bool:
    """Whether an entity with these key values is logged at `rate` (stable across processes).

    Examples:
        >>> sampled(["UA", "EWR"], 1.0), sampled(["UA", "EWR"], 0.0)
        (True, False)
    """
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    # The unpersonalized hash: what earlier releases sampled with, so the same entities stay in.
    return key_fraction(key_values, person=b"") < rate


@dataclass
class LoggerStats:
    """Counters of a logger (for metrics and tests)."""

    logged: int = 0  # entries handed to Redis
    sampled_out: int = 0  # requests not logged by sampling
    spilled: int = 0  # entries written to the spill file
    replayed: int = 0  # spilled entries replayed into Redis
    flushed_rows: int = 0
    flushed_files: int = 0
    errors: int = 0  # background failures (retried)


class _SpillFile:
    """This process's open spill file: exclusive flock, append, fsync per record."""

    def __init__(self, directory: Path, sequence: int) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns() // 1000}-{socket.gethostname()}-{os.getpid()}-{sequence}.spill"
        self.path = directory / name
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)  # the file itself survives a crash, not only its contents
        finally:
            os.close(dir_fd)

    def append(self, key: str, data: bytes) -> None:
        record: bytes = msgpack.packb([key, data], use_bin_type=True)
        view = memoryview(_LENGTH.pack(len(record)) + record)
        while view:  # os.write may write less than asked (signals, full disk)
            view = view[os.write(self.fd, view) :]
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)  # releases the flock


def _read_spill(path: Path) -> list[tuple[str, bytes]]:
    """The complete records of a spill file (a torn last record, from a crash mid-write, was
    never acknowledged to its caller and is skipped)."""
    raw = path.read_bytes()
    records = []
    offset = 0
    while offset + _LENGTH.size <= len(raw):
        (length,) = _LENGTH.unpack_from(raw, offset)
        end = offset + _LENGTH.size + length
        if end > len(raw):
            break
        key, data = msgpack.unpackb(raw[offset + _LENGTH.size : end], raw=False)
        records.append((str(key), bytes(data)))
        offset = end
    return records


def _fast_client(client: redis.Redis, timeout_s: float) -> redis.Redis:
    """A client to the same server with short timeouts and no retries (log() must not hang)."""
    pool = client.connection_pool
    kwargs = dict(pool.connection_kwargs)
    kwargs.update(
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),
    )
    kwargs.pop("retry_on_error", None)
    return redis.Redis(
        connection_pool=redis.ConnectionPool(connection_class=pool.connection_class, **kwargs)
    )


def service_keys(repo: Repo, service: str) -> list[str] | None:
    """Join keys of `service`'s stored views, in first-use order (None: unknown service)."""
    definition = repo.feature_services.get(service)
    if definition is None:
        return None
    keys: dict[str, None] = {}
    for proj in definition.projections:
        views = proj.view.inputs if isinstance(proj.view, OnDemandView) else [proj.view]
        for view in views:
            if isinstance(view, FeatureView | AggregationView):
                keys.update(dict.fromkeys(view.join_keys))
    return list(keys)


class FeatureLogger:
    """Logs served requests to a Redis Stream per service, spilling to disk while Redis is
    unavailable; a background thread replays spills and flushes to Parquet (module docstring).

    `definitions` (a `LiveDefinitions` or `Repo`) names each service's entity keys: they are
    hashed for sampling and come first among the logged input columns. Without it (or for an
    unknown service) every input column counts as a key. `stream_maxlen` caps each stream
    (approximately): entries trimmed before a flush are lost, so leave it None unless Redis
    memory matters more than completeness.
    """

    def __init__(
        self,
        root: str | Path,
        store: RedisOnlineStore,
        *,
        definitions: LiveDefinitions | Repo | None = None,
        sample_rate: float = 1.0,
        stream_maxlen: int | None = None,
        flush_interval_s: float | None = 10.0,
        retry_interval_s: float = 0.5,
        timeout_s: float = 0.25,
        claim_idle_ms: int = 60_000,
        background: bool = True,
        log: Log | None = _stderr,
    ) -> None:
        if not 0.0 <= sample_rate <= 1.0:
            from serving.errors import ServingError

            raise ServingError(
                f"sample rate {sample_rate!r} is outside [0, 1]",
                where="feature log",
                hint="use 1.0 to log every request, 0.1 for one entity in ten",
            )
        self.root = Path(root).resolve()
        self.project = store.project
        self.definitions = definitions
        self.sample_rate = sample_rate
        self.stream_maxlen = stream_maxlen
        self.flush_interval_s = flush_interval_s
        self.retry_interval_s = retry_interval_s
        self.client = _fast_client(store.client, timeout_s)
        self.flusher = LogFlusher(
            self.root, store.client, self.project, claim_idle_ms=claim_idle_ms
        )
        self.stats = LoggerStats()
        self._log = log
        self._lock = threading.Lock()  # spill state
        self._flush_lock = threading.Lock()
        self._healthy = True
        self._spill: _SpillFile | None = None
        self._sequence = count()
        self._keys: dict[tuple[str, str | None], list[str] | None] = {}
        self._status_ids: dict[tuple[str, ...], str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(
                target=self._run, name="featurelib-feature-log", daemon=True
            )
            self._thread.start()

    # ------------------------------------------------------------------ logging

    def log(
        self,
        request_id: str,
        logged_at: datetime,
        feature_time: datetime,
        service: str,
        service_version: str,
        model: str | None,
        model_version: int | None,
        inputs: pl.DataFrame,
        response: OnlineResponse,
        predictions: np.ndarray | None,
        degraded: bool = False,
    ) -> bool:
        """Log one served request (all its rows); False when sampling skipped it. Never raises
        on Redis failures (the entry is spilled to disk instead). `degraded`: the features are
        default values served while the online store was unavailable."""
        keys = self._key_columns(service, inputs)
        if self.sample_rate < 1.0:
            first = inputs.select(keys).row(0) if inputs.height and keys else ()
            if not sampled(first, self.sample_rate):
                self.stats.sampled_out += 1
                return False
        features = response.features
        input_names = [*keys, *(c for c in inputs.columns if c not in keys)]
        input_names = [c for c in input_names if c not in RESERVED and c not in features.columns]
        if RESERVED.intersection(features.columns):
            features = features.select(c for c in features.columns if c not in RESERVED)
        chosen = inputs if input_names == inputs.columns else inputs.select(input_names)
        served = chosen.hstack(features.get_columns()) if chosen.width else features
        columns, layout = encode_frame(served)
        statuses = list(response.statuses)
        columns += [
            [f"{STATUS_PREFIX}{name}", ["String"], list(values)]
            for name, values in response.statuses.items()
        ]
        data = encode_entry(
            request_id=request_id,
            logged_at_us=_micros(logged_at),
            feature_time_us=_micros(feature_time),
            service=service,
            service_version=service_version,
            model=model,
            model_version=model_version,
            rows=max(inputs.height, features.height),
            predictions=None if predictions is None else np.asarray(predictions, float).tolist(),
            columns=columns,
            layout=f"{layout}-{self._status_layout(statuses)}",
            degraded=degraded,
        )
        self._emit(stream_key(self.project, service), data)
        return True

    def _status_layout(self, statuses: list[str]) -> str:
        """`layout_id` of the status columns, cached (the same few lists on every request)."""
        key = tuple(statuses)
        found = self._status_ids.get(key)
        if found is None:
            if len(self._status_ids) > 256:
                self._status_ids.clear()
            found = self._status_ids[key] = layout_id(statuses)
        return found

    def _key_columns(self, service: str, inputs: pl.DataFrame) -> list[str]:
        repo = self._repo()
        keys = None
        if repo is not None:
            definition = repo.feature_services.get(service)
            cache_key = (service, None if definition is None else definition.version)
            if cache_key not in self._keys:
                self._keys[cache_key] = service_keys(repo, service)
            keys = self._keys[cache_key]
        if keys is None:
            return list(inputs.columns)
        return [k for k in keys if k in inputs.columns]

    def _repo(self) -> Repo | None:
        if isinstance(self.definitions, LiveDefinitions):
            return self.definitions.repo
        return self.definitions

    def _emit(self, key: str, data: bytes) -> None:
        if self._healthy:
            try:
                self._xadd(self.client, key, data)
                self.stats.logged += 1
                return
            except redis.RedisError as exc:
                with self._lock:
                    if self._healthy:
                        self._healthy = False
                        self._say(f"Redis unavailable ({exc}); spilling to {spill_dir(self.root)}")
        with self._lock:
            if self._spill is None:
                self._spill = _SpillFile(spill_dir(self.root), next(self._sequence))
            self._spill.append(key, data)
            self.stats.spilled += 1

    def _xadd(self, client: redis.Redis | Any, key: str, data: bytes) -> None:
        if self.stream_maxlen is None:
            client.xadd(key, {"d": data})
        else:
            client.xadd(key, {"d": data}, maxlen=self.stream_maxlen, approximate=True)

    # ------------------------------------------------------------------ background

    def _run(self) -> None:
        next_flush = time.monotonic() + (self.flush_interval_s or 0.0)
        while not self._stop.wait(self.retry_interval_s):
            try:
                self.replay()
                if self.flush_interval_s is not None and time.monotonic() >= next_flush:
                    next_flush = time.monotonic() + self.flush_interval_s
                    if self._healthy:
                        self.flush()
            except Exception as exc:  # the thread must outlive any one bad batch or blip
                self.stats.errors += 1
                self._say(f"background work failed, retrying: {type(exc).__name__}: {exc}")

    def replay(self) -> int:
        """If Redis answers, resume logging to it and replay every spill file nobody holds.
        Returns the number of entries replayed."""
        directory = spill_dir(self.root)
        if self._healthy and not any(directory.glob("*.spill")):
            return 0
        try:
            self.client.ping()
        except redis.RedisError:
            return 0
        with self._lock:
            if self._spill is not None:
                self._spill.close()  # rotate: the closed file is replayed below
                self._spill = None
            if not self._healthy:
                self._healthy = True
                self._say("Redis is back; replaying spilled entries")
        replayed = 0
        for path in sorted(directory.glob("*.spill")):
            replayed += self._replay_file(path)
        self.stats.replayed += replayed
        return replayed

    def _replay_file(self, path: Path) -> int:
        try:
            fd = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            return 0  # another process replayed it meanwhile
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return 0  # still being written by a live process (or by us: a newer file)
            if not path.exists():
                return 0
            records = _read_spill(path)
            for start in range(0, len(records), 500):
                pipe = self.client.pipeline(transaction=False)
                for key, data in records[start : start + 500]:
                    self._xadd(pipe, key, data)
                pipe.execute()
            path.unlink()  # only once every record is in Redis
            return len(records)
        finally:
            os.close(fd)

    def flush(self, services: Sequence[str] | None = None) -> list[FlushResult]:
        """Flush the buffered entries of `services` (default: every service) to Parquet."""
        with self._flush_lock:
            results = self.flusher.flush(services)
        self.stats.flushed_rows += sum(r.rows for r in results)
        self.stats.flushed_files += sum(len(r.files) for r in results)
        return results

    def close(self, *, final_flush: bool = True) -> None:
        """Stop the background thread, replay spills and flush (unless Redis is down: then the
        spill files stay for the next process to replay)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        try:
            self.replay()
            if final_flush and self._healthy:
                self.flush()
        except Exception as exc:  # shutdown goes on: entries stay where they are, not lost
            self._say(
                f"final flush failed ({type(exc).__name__}: {exc}); entries stay in Redis / "
                "the spill directory for `featurelib logs flush`"
            )
        with self._lock:
            if self._spill is not None:
                self._spill.close()
                self._spill = None
        self.client.close()

    def __enter__(self) -> FeatureLogger:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def _say(self, message: str) -> None:
        if self._log is not None:
            self._log(message)


def _micros(moment: datetime) -> int:
    return epoch_micros(moment)


# ----------------------------------------------------------------------------- reading


def read_logs(
    root: str | Path,
    service: str,
    since: datetime | None = None,
    until: datetime | None = None,
) -> pl.DataFrame:
    """Flushed log rows of `service` with `since <= logged_at < until` (naive times are UTC),
    ordered by logged_at, request_id, row.

    At-least-once delivery can write an entry twice; such copies agree on (request_id, row,
    logged_at) and only the first is kept (distinct requests that reuse a client-chosen id
    differ in `logged_at`, so none is dropped). Files written under different service versions
    may differ in columns (missing ones are null) or in a column's type (then it is read as
    text in every file, so no file is dropped)."""
    directory = log_dir(Path(root)) / f"service={service}"
    first = None if since is None else _aware(since).astimezone(UTC).date()
    last = None if until is None else _aware(until).astimezone(UTC).date()
    files = [
        path
        for part in sorted(directory.glob("date=*"))
        if _in_range(part.name.removeprefix("date="), first, last)
        for path in sorted(part.glob("*.parquet"))
    ]
    if not files:
        return pl.DataFrame(schema=META_SCHEMA)
    frame = pl.concat(_scans_with_common_types(files), how="diagonal_relaxed")
    if since is not None:
        frame = frame.filter(pl.col("logged_at") >= _aware(since))
    if until is not None:
        frame = frame.filter(pl.col("logged_at") < _aware(until))
    out = (
        frame.unique(subset=["request_id", "row", "logged_at"], keep="first", maintain_order=True)
        .sort("logged_at", "request_id", "row")
        .collect()
    )
    missing = [pl.lit(None, t).alias(n) for n, t in META_SCHEMA.items() if n not in out.columns]
    if missing:  # files written before a metadata column existed
        out = out.with_columns(missing)
    out = out.with_columns(pl.col("degraded").fill_null(False))
    statuses = [c for c in out.columns if c.startswith(STATUS_PREFIX)]
    data = [c for c in out.columns if c not in RESERVED and c not in statuses]
    return out.select(*META_SCHEMA, *data, *statuses)


def _scans_with_common_types(files: Sequence[Path]) -> list[pl.LazyFrame]:
    """One scan per file; a column whose types differ between files without a common supertype
    (a feature that changed type with its service version) is read as text everywhere."""
    schemas = [pl.read_parquet_schema(f) for f in files]
    types: dict[str, set[pl.DataType]] = {}
    for schema in schemas:
        for name, dtype in schema.items():
            types.setdefault(name, set()).add(dtype)
    conflicting = set()
    for name, found in types.items():
        if len(found) > 1:
            try:
                pl.concat([pl.DataFrame(schema={name: t}) for t in found], how="vertical_relaxed")
            except (pl.exceptions.SchemaError, pl.exceptions.InvalidOperationError):
                conflicting.add(name)
    scans = []
    for path, schema in zip(files, schemas, strict=True):
        scan = pl.scan_parquet(path)
        as_text = [_as_text(n, schema[n]) for n in conflicting if n in schema]
        scans.append(scan.with_columns(as_text) if as_text else scan)
    return scans


def _as_text(name: str, dtype: pl.DataType) -> pl.Expr:
    if isinstance(dtype, pl.List):
        inner = pl.col(name).list.eval(pl.element().cast(pl.String)).list.join(", ")
        text = pl.format("[{}]", inner)
        return pl.when(pl.col(name).is_null()).then(None).otherwise(text).alias(name)
    return pl.col(name).cast(pl.String).alias(name)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _in_range(day: str, first: date | None, last: date | None) -> bool:
    try:
        value = date.fromisoformat(day)
    except ValueError:
        return False
    return (first is None or value >= first) and (last is None or value <= last)
