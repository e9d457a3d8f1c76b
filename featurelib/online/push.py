"""Pushing events: append them to the offline push log, then update the online store.

    result = push(store, repo, "flights", rows)   # rows: polars DataFrame or list of dicts

Validation (against the source's declared schema, plus the columns its data already holds):
every row needs a parseable event timestamp (datetime, or ISO 8601 text; naive = UTC), join key
values of the entities' key types, and values that convert to their column's type (Int64:
integers or integral numbers/text; Float64: numbers or numeric text, NaN = null; Bool:
true/false, 0/1, "true"/"false"; String: text only; Timestamp: as the event time). A null (or
absent) join key keeps the row out of the views keyed on it, exactly as the offline engine
skips such rows (`PushResult.skipped` counts them per view; e.g. a flight without a tail number
still counts for its carrier); a row that no view over the source can use is refused with
"missing join key". Columns the source does not know are ignored (and reported). With event
ids on, every row needs one. `push()` refuses the whole batch with a `PushError` listing each
bad row (numbered from 0) and its reasons; the stream consumer dead-letters bad rows instead.

Then, in this order (each step is safe to repeat, so a crash anywhere loses nothing):

1. *claim* event ids (de-duplication, when the rows carry ids, see below);
2. *log*: the new rows become one Parquet file `<repo>/data/_push_log/<source>/part-<UTC
   time>-<uuid>.parquet`, written to a temporary name, fsynced and renamed: the commit point.
   `read_source` returns the source's rows followed by the log's, so `training_set` and
   `materialize` see exactly what was pushed;
3. *online*: plain views over the source get the batch's latest row per entity (keep-newest
   writes, so late rows are harmless); aggregation views get the tiles and blocks of the
   batch's entities recomputed from all their events (source + log) up to `now` (and the
   batch's own events, even future-dated ones) with the materialization code path, so a late
   event lands in the right tile and the result is exact and idempotent. Only the top-level
   blocks holding a pushed event are recomputed: the others do not change (so the source's
   own rows must have been materialized, as usual). Blocks are kept for the longest window
   before `now` (default: the clock; older late events are in the offline log only: no
   online read at `now` or later can need them);
4. *done*: the ids are marked applied.

De-duplication by event id: ids come from `event_id_field`, else from a source column named
`event_id` (the stream consumer falls back to the stream entry id). Each id has its own key
`fl:<project>:seen:<source>:<id>` (a per-id key rather than one set, so that every id expires on
its own after `dedupe_ttl_s`, 7 days by default), holding the id's state:

    L|<log file>|<claim time us>|<owner>   claimed: being logged into <log file>
    D|<log file>                           applied (logged and online)

A row whose id is `D` is a duplicate and skipped. An `L` id whose log file exists was logged by
a push that died before finishing: its online update is redone ("resumed"), it is not logged
again. An `L` id whose file does not exist was claimed by a push that is still running (wait)
or died before its commit point: after `lease_s`, or at once when the owner is an earlier run of
the same stream consumer, the claim is taken over (compare-and-set) and the row is logged.
Without ids there is no de-duplication: pushing the same rows twice counts them twice.

Online updates of one source are serialized by a Redis lock (`fl:<project>:lock:push:<source>`)
so that two pushers' recomputations cannot overwrite each other with older block states.
The push log directory must be shared by every process pushing to the repo.
"""

from __future__ import annotations

import contextlib
import math
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
import redis

from featurelib.compile.polars_expr import featurelib_dtype, polars_dtype
from featurelib.dtypes import DType
from featurelib.errors import FeaturelibError, RepoError, SourceError
from featurelib.offline.io import (
    cast_keys,
    normalize,
    prepare_source_frame,
    push_log_dir,
    read_source,
    write_parquet_atomically,
)
from featurelib.online.materialize import (
    TOUCHED,
    latest_rows,
    materialize_aggregation,
    write_latest,
)
from featurelib.online.push_rows import Rows, columns_of, convert_column
from featurelib.online.server import RedisUnavailableError
from featurelib.online.store import RedisOnlineStore
from featurelib.repo import Repo
from featurelib.sources import BatchSource
from featurelib.views import AggregationView, FeatureView

__all__ = ["PushError", "PushResult", "Pusher", "RowError", "ValidBatch", "push"]

DEFAULT_EVENT_ID = "event_id"
DEDUPE_TTL_S = 7 * 24 * 3600
LEASE_S = 30.0
LOCK_TIMEOUT_S = 60.0
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
Hook = Callable[[str], None]

# KEYS[1] marker; ARGV value, ttl. Claims a free id, else returns its current state.
CLAIM = """
local old = redis.call('GET', KEYS[1])
if old then return old end
redis.call('SET', KEYS[1], ARGV[1], 'EX', tonumber(ARGV[2]))
return false
"""
# KEYS[1] marker; ARGV expected, new, ttl. Compare-and-set: take over an abandoned claim.
TAKE_OVER = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
  return 1
end
return 0
"""
# KEYS[1] marker; ARGV expected. Deletes our own claim (compare-and-delete).
RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class RowError:
    """Why row `row` (position in the pushed batch, from 0) was refused."""

    row: int
    reasons: tuple[str, ...]

    def __str__(self) -> str:
        return f"row {self.row}: {'; '.join(self.reasons)}"


class PushError(FeaturelibError):
    """Pushed rows are invalid; `errors` lists every bad row with its reasons."""

    def __init__(self, source: str, errors: Sequence[RowError], total: int) -> None:
        self.errors = list(errors)
        shown = "; ".join(str(e) for e in self.errors[:20])
        more = f"; ... and {len(self.errors) - 20} more" if len(self.errors) > 20 else ""
        super().__init__(
            f"{len(self.errors)} of {total} rows are invalid (rows numbered from 0): {shown}{more}",
            where=f"push to source {source!r}",
            hint="fix or drop those rows and push again; nothing of this batch was written",
        )


@dataclass(frozen=True)
class PushResult:
    """What one push did."""

    source: str
    received: int  # valid rows given
    appended: int  # rows appended to the push log
    duplicates: int  # rows skipped: their event id was already applied (or repeated)
    resumed: int  # rows an interrupted push had logged; their online update was redone
    log_file: Path | None  # the file the rows were appended to (None: nothing new)
    online: dict[str, int]  # view -> records written
    ignored_columns: tuple[str, ...]  # pushed columns the source does not have
    seconds: float
    skipped: dict[str, int] = field(default_factory=dict)  # view -> rows with a null join key


@dataclass(frozen=True)
class ValidBatch:
    """Validated rows in the push log's schema, with their positions in the input and ids."""

    frame: pl.DataFrame
    positions: list[int]
    ids: list[str] | None
    ignored_columns: tuple[str, ...] = ()


@dataclass
class Pusher:
    """Validates and applies pushes to one source (reuse it: the target schema is cached; one
    thread at a time).

    `owner` names the pushing process (a stream consumer passes its consumer name); a new
    `Pusher` with the same owner name takes over that owner's unfinished claims at once.
    `hook` is called with "claimed" (ids claimed), "logged" (log file written) and "applied"
    (online updated): a seam for crash tests.
    """

    store: RedisOnlineStore
    repo: Repo
    source_name: str
    event_id_field: str | None = None
    owner: str = "api"
    lease_s: float = LEASE_S
    dedupe_ttl_s: int = DEDUPE_TTL_S
    lock_timeout_s: float = LOCK_TIMEOUT_S
    hook: Hook | None = None
    _incarnation: str = field(default_factory=lambda: uuid.uuid4().hex[:12], repr=False)
    _schema: dict[str, DType] | None = field(default=None, repr=False)
    _scripts: dict[str, Any] = field(default_factory=dict, repr=False)
    _claimed: dict[str, str] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.source_name not in self.repo.sources:
            raise RepoError(
                f"no source named {self.source_name!r}",
                hint=f"sources are: {sorted(self.repo.sources)}",
            )
        self.source: BatchSource = self.repo.sources[self.source_name]
        self.plain_views: list[FeatureView] = [
            v for v in self.repo.feature_views.values() if v.source.name == self.source_name
        ]
        self.aggregation_views: list[AggregationView] = [
            v for v in self.repo.aggregation_views.values() if v.source.name == self.source_name
        ]
        self.key_types: dict[str, DType] = {}
        views: list[FeatureView | AggregationView] = [*self.plain_views, *self.aggregation_views]
        for view in views:
            self.key_types.update(view.join_key_types)
        self.view_keys = {view.name: list(view.join_keys) for view in views}
        if "|" in self.owner or "/" in self.owner:
            raise FeaturelibError(f"owner name {self.owner!r} may not hold '|' or '/'")

    # ------------------------------------------------------------------ schema & validation

    @property
    def schema(self) -> dict[str, DType]:
        """The columns (and featurelib types) rows of this source are logged with."""
        if self._schema is None:
            self._schema = self._target_schema()
        return self._schema

    def _target_schema(self) -> dict[str, DType]:
        declared = dict(self.source.columns or {})
        try:
            existing = read_source(self.source, self.repo.root).collect_schema()
        except SourceError:
            if not declared:
                raise
            existing = pl.Schema()
        schema = dict(declared)
        for name, dtype in existing.items():
            kind = featurelib_dtype(dtype)
            pushable = kind.is_known and kind.name != "List"
            if name not in schema and not name.startswith("__") and pushable:
                schema[name] = kind
        where = f"push to source {self.source_name!r}"
        for name in [self.source.timestamp_field, *self.key_types]:
            if name not in schema:
                raise SourceError(
                    f"the source has no column {name!r} (needed as "
                    f"{'event time' if name == self.source.timestamp_field else 'join key'})",
                    where=where,
                    hint="declare it in the source's schema",
                )
        return schema

    @property
    def id_field(self) -> str | None:
        """The column event ids are read from (None: no de-duplication by row content)."""
        if self.event_id_field:
            return self.event_id_field
        return DEFAULT_EVENT_ID if DEFAULT_EVENT_ID in self.schema else None

    def validate(self, rows: Rows) -> tuple[ValidBatch, list[RowError]]:
        """The valid rows in the log's schema, and one `RowError` per invalid row."""
        columns, n, errors = columns_of(rows)
        schema = self.schema
        reasons: dict[int, list[str]] = {i: [e] for i, e in errors.items()}
        out: dict[str, pl.Series] = {}
        for name, kind in schema.items():
            series, bad = convert_column(name, columns.get(name), kind, n)
            out[name] = series
            for i, reason in bad:
                reasons.setdefault(i, []).append(reason)
        frame = pl.DataFrame(out, schema={k: polars_dtype(t) for k, t in schema.items()})
        for key, kind in self.key_types.items():
            column = frame[key]
            typed = column.cast(polars_dtype(kind), strict=False)
            for i in (column.is_not_null() & typed.is_null()).arg_true().to_list():
                reasons.setdefault(i, []).append(
                    f"join key {key!r} = {column[i]!r} is not a valid {kind}"
                )
        # A null key only keeps the row out of the views keyed on it (as offline); a row that
        # no view can use is refused.
        per_view = [
            pl.all_horizontal(pl.col(k).is_not_null() for k in keys)
            for keys in self.view_keys.values()
        ]
        usable = frame.select(pl.any_horizontal(per_view) if per_view else pl.lit(True))
        for i in (~usable.to_series()).arg_true().to_list():
            for key in self.key_types:
                if frame[key][i] is None and not any(
                    r.startswith(f"{key}:") for r in reasons.get(i, [])
                ):
                    reasons.setdefault(i, []).append(f"missing join key {key!r}")
        ts = self.source.timestamp_field
        for i in frame[ts].is_null().arg_true().to_list():
            if not any(r.startswith(f"{ts}:") for r in reasons.get(i, [])):
                reasons.setdefault(i, []).append(f"missing event timestamp {ts!r}")
        ids: list[str] | None = None
        id_field = self.id_field
        if id_field is not None:
            raw_ids = columns.get(id_field)
            if isinstance(raw_ids, pl.Series):
                raw_ids = raw_ids.to_list()
            ids = []
            for i in range(n):
                value = None if raw_ids is None else raw_ids[i]
                if value is None or (isinstance(value, float) and math.isnan(value)):
                    reasons.setdefault(i, []).append(f"missing event id {id_field!r}")
                    ids.append("")
                else:
                    ids.append(str(value))
        for i, not_an_object in errors.items():
            reasons[i] = [not_an_object]
        bad_rows = sorted(i for i, r in reasons.items() if r)
        good = [i for i in range(n) if i not in reasons]
        ignored = tuple(c for c in columns if c not in schema and c != id_field)
        batch = ValidBatch(
            frame[good] if bad_rows else frame,
            good,
            None if ids is None else [ids[i] for i in good],
            ignored,
        )
        return batch, [RowError(i, tuple(reasons[i])) for i in bad_rows]

    # ------------------------------------------------------------------ applying

    def apply(
        self,
        batch: ValidBatch,
        *,
        ids: list[str] | None = None,
        now: datetime | None = None,
        offline: bool = True,
        online: bool = True,
    ) -> PushResult:
        """Log and serve validated rows (see the module docstring for the steps).

        `ids` overrides the batch's event ids (the stream consumer passes entry ids when the
        rows carry none); `now` (default: the clock) anchors the online retention.
        `offline=False` serves the rows without logging them (Feast's `to="online"`: for rows
        the batch source already holds, which logging would count twice offline);
        `online=False` only logs them (`to="offline"`)."""
        if not (offline or online):
            raise ValueError("a push needs at least one of offline and online")
        started = time.perf_counter()
        now = now or datetime.now(UTC)
        if not offline:
            frame = batch.frame
            try:
                served = self._update_online(frame, now) if frame.height else {}
            except redis.RedisError as exc:
                raise RedisUnavailableError(
                    f"Redis failed during the push: {exc}",
                    where=f"push to source {self.source_name!r}",
                    hint="retry the push: online writes are idempotent",
                ) from exc
            return PushResult(
                self.source_name,
                frame.height,
                0,
                0,
                0,
                None,
                served,
                batch.ignored_columns,
                time.perf_counter() - started,
                self._skipped(frame),
            )
        ids = batch.ids if ids is None else ids
        log_dir = push_log_dir(self.repo.root, self.source_name)
        file_name = f"part-{datetime.now(UTC):%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex}.parquet"
        frame = batch.frame
        try:
            resumed: list[int] = []
            if ids is None:
                new, duplicates = list(range(frame.height)), 0
            else:
                new, resumed, duplicates = self._claim(ids, file_name, log_dir)
                self._hook("claimed")
            log_file = None
            if new:
                try:
                    log_file = _write_log(frame[new], log_dir / file_name)
                except BaseException:
                    self._release_claims()
                    raise
                self._hook("logged")
            serve = sorted(new + resumed) if online else []
            served = self._update_online(frame[serve], now) if serve else {}
            self._hook("applied")
            if ids is not None and (new or resumed):
                self._mark_done([ids[i] for i in new], file_name)
                self._mark_done_resumed([ids[i] for i in resumed])
        except redis.RedisError as exc:
            raise RedisUnavailableError(
                f"Redis failed during the push: {exc}",
                where=f"push to source {self.source_name!r}",
                hint="retry the push: with event ids, rows already logged are not logged twice",
            ) from exc
        return PushResult(
            self.source_name,
            frame.height,
            len(new),
            duplicates,
            len(resumed),
            log_file,
            served,
            batch.ignored_columns,
            time.perf_counter() - started,
            self._skipped(frame),
        )

    def _skipped(self, frame: pl.DataFrame) -> dict[str, int]:
        """Per view, the rows it cannot use (a null join key), as the offline engine skips them."""
        if not self.view_keys or frame.height == 0:
            return {}
        counts = frame.select(
            [
                (~pl.all_horizontal(pl.col(k).is_not_null() for k in keys)).sum().alias(name)
                for name, keys in self.view_keys.items()
            ]
        )
        return {name: int(v) for name, v in counts.row(0, named=True).items() if v}

    def _hook(self, point: str) -> None:
        if self.hook is not None:
            self.hook(point)

    def _script(self, name: str, body: str) -> Any:
        if name not in self._scripts:
            self._scripts[name] = self.store.client.register_script(body)
        return self._scripts[name]

    def _marker(self, event_id: str) -> bytes:
        return f"fl:{self.store.project}:seen:{self.source_name}:{event_id}".encode()

    def _claim(
        self, ids: list[str], file_name: str, log_dir: Path
    ) -> tuple[list[int], list[int], int]:
        """Claim the batch's ids for `file_name`: (rows to log, rows to re-serve, duplicates)."""
        first: dict[str, int] = {}
        duplicates = 0
        for i, event_id in enumerate(ids):
            if event_id in first:
                duplicates += 1
            else:
                first[event_id] = i
        me = f"{self.owner}/{self._incarnation}"
        claimed = self._claimed = {}
        new: list[int] = []
        resumed: list[int] = []
        waiting = list(first)
        delay = 0.02
        while waiting:
            claim_us = int(time.time() * 1_000_000)
            value = f"L|{file_name}|{claim_us}|{me}"
            claim = self._script("claim", CLAIM)
            pipe = self.store.client.pipeline(transaction=False)
            for event_id in waiting:
                claim(keys=[self._marker(event_id)], args=[value, self.dedupe_ttl_s], client=pipe)
            states = pipe.execute()
            takeovers: list[tuple[str, bytes]] = []
            still: list[str] = []
            for event_id, state in zip(waiting, states, strict=True):
                if state is None:
                    new.append(first[event_id])
                    claimed[event_id] = value
                    continue
                kind, _, rest = state.decode().partition("|")
                if kind == "D":
                    duplicates += 1
                    continue
                other_file, claimed_us, owner = _parse_claim(rest)
                if (log_dir / other_file).exists():
                    resumed.append(first[event_id])
                elif self._abandoned(claimed_us, owner, claim_us):
                    takeovers.append((event_id, state))
                else:
                    still.append(event_id)
            if takeovers:
                take = self._script("take_over", TAKE_OVER)
                pipe = self.store.client.pipeline(transaction=False)
                for event_id, state in takeovers:
                    take(
                        keys=[self._marker(event_id)],
                        args=[state, value, self.dedupe_ttl_s],
                        client=pipe,
                    )
                for (event_id, _), won in zip(takeovers, pipe.execute(), strict=True):
                    if won:
                        new.append(first[event_id])
                        claimed[event_id] = value
                    else:
                        still.append(event_id)  # someone else moved it: look again
            waiting = still
            if waiting:
                time.sleep(delay)
                delay = min(delay * 2, 0.5)
        return sorted(new), sorted(resumed), duplicates

    def _release_claims(self) -> None:
        """Drop this push's claims (the log write failed), so a retry need not wait."""
        release = self._script("release", RELEASE)
        pipe = self.store.client.pipeline(transaction=False)
        for event_id, value in self._claimed.items():
            release(keys=[self._marker(event_id)], args=[value], client=pipe)
        with contextlib.suppress(redis.RedisError):  # else they expire after the lease
            pipe.execute()
        self._claimed = {}

    def _abandoned(self, claimed_us: int, owner: str, now_us: int) -> bool:
        """Whether a claim whose log file does not exist may be taken over now."""
        name, _, incarnation = owner.partition("/")
        if incarnation == self._incarnation:
            return True  # an earlier push of this Pusher failed before its commit point
        if name == self.owner and name != "api":
            return True  # an earlier run of this consumer died holding it
        return now_us - claimed_us >= self.lease_s * 1_000_000

    def _mark_done(self, ids: list[str], file_name: str) -> None:
        pipe = self.store.client.pipeline(transaction=False)
        for event_id in ids:
            pipe.set(self._marker(event_id), f"D|{file_name}", ex=self.dedupe_ttl_s)
        pipe.execute()

    def _mark_done_resumed(self, ids: list[str]) -> None:
        if not ids:
            return
        states: list[bytes | None] = self.store.client.mget([self._marker(i) for i in ids])  # type: ignore[assignment]
        pipe = self.store.client.pipeline(transaction=False)
        for event_id, state in zip(ids, states, strict=True):
            if state is not None and state.startswith(b"L|"):
                other_file = _parse_claim(state.decode()[2:])[0]
                pipe.set(self._marker(event_id), f"D|{other_file}", ex=self.dedupe_ttl_s)
        pipe.execute()

    def _update_online(self, frame: pl.DataFrame, now: datetime) -> dict[str, int]:
        """Plain views: the batch's latest rows; aggregation views: the batch's entities'
        blocks recomputed from all their events (under the source's push lock)."""
        timestamps = [self.source.timestamp_field]
        if self.source.created_timestamp_field:
            timestamps.append(self.source.created_timestamp_field)
        prepared = prepare_source_frame(self.source, normalize(frame.lazy(), timestamps))
        written: dict[str, int] = {}
        lock = self.store.client.lock(
            f"fl:{self.store.project}:lock:push:{self.source_name}",
            timeout=self.lock_timeout_s,
            blocking_timeout=self.lock_timeout_s,
            sleep=0.01,
        )
        if not lock.acquire():
            raise FeaturelibError(
                f"another push held the online lock of {self.source_name!r} for "
                f"{self.lock_timeout_s:g} s",
                where=f"push to source {self.source_name!r}",
                hint="retry; with event ids the rows already logged are not logged twice",
            )
        try:
            for view in self.plain_views:
                latest = latest_rows(view, cast_keys(prepared, view.join_key_types))
                written[view.name] = write_latest(self.store, view, latest)
            # Events up to now (and the batch's own, even if future-dated): source rows later
            # than now are not due yet, exactly as materialization up to now leaves them out.
            newest = frame[self.source.timestamp_field].max()
            end = max(now, newest) if isinstance(newest, datetime) else now
            for agg in self.aggregation_views:
                ts = pl.col(self.source.timestamp_field).dt.epoch("us").alias(TOUCHED)
                entities = frame.select(*agg.join_keys, ts).drop_nulls().unique()
                result = materialize_aggregation(
                    self.store, agg, self.repo.root, EPOCH, end, entities=entities, now=now
                )
                written[agg.name] = result.records
        finally:
            # If it expired while we worked, the next push recomputes these entities anyway.
            with contextlib.suppress(redis.exceptions.LockError):
                lock.release()
        return written


def push(
    store: RedisOnlineStore,
    repo: Repo | str | Path,
    source_name: str,
    rows: Rows,
    *,
    event_id_field: str | None = None,
    now: datetime | None = None,
) -> PushResult:
    """Validate `rows`, append them to the source's push log, update the online store.

    Refuses the whole batch with a `PushError` (listing each bad row) when any row is invalid.
    See the module docstring for validation, ordering, de-duplication and crash safety.
    """
    loaded = repo if isinstance(repo, Repo) else Repo.load(repo)
    pusher = Pusher(store, loaded, source_name, event_id_field=event_id_field)
    batch, errors = pusher.validate(rows)
    if errors:
        raise PushError(source_name, errors, len(batch.positions) + len(errors))
    return pusher.apply(batch, now=now)


# ---------------------------------------------------------------------- helpers


def _parse_claim(rest: str) -> tuple[str, int, str]:
    """(log file, claim time us, owner) of an `L|...` marker (without the `L|`)."""
    file_name, _, tail = rest.partition("|")
    claimed, _, owner = tail.partition("|")
    try:
        return file_name, int(claimed), owner
    except ValueError:
        return file_name, 0, owner


def _write_log(frame: pl.DataFrame, path: Path) -> Path:
    """Write `frame` to `path` atomically and durably (nothing of a failed batch is logged)."""
    return write_parquet_atomically(frame, path, what="push log")
