"""A Redis Streams consumer that pushes events into one source (`featurelib stream`).

Message format: each stream entry has a field `data` holding one event as a JSON object
(column -> value; timestamps as ISO 8601 text, naive = UTC), e.g.

    XADD flights:events * data '{"event_id": "f-1", "carrier": "UA", "arr_delay": 12.0,
                                 "event_timestamp": "2013-06-01T10:20:00Z", ...}'

Other fields are ignored. The consumer reads with a consumer group (created at stream id 0,
with MKSTREAM, when missing), so several consumers share the work and delivery is
at-least-once; every entry is acknowledged (XACK) only after it was handled:

* valid events are pushed (`featurelib.online.push`: logged to the offline push log, then the
  online store updated), then acknowledged. Events are de-duplicated by event id (the
  `event_id_field`, else a source column `event_id`, else the stream entry id), so a
  redelivered entry is never counted twice;
* bad events (no `data`, not a JSON object, missing key, wrong type, unparseable time, ...)
  are added to the dead-letter stream `<stream>:dead` with fields `data` (as received),
  `reason`, `source`, `original_id`, `stream`, `group`, `consumer`, then acknowledged. Nothing
  is dropped silently (a crash between the two steps can dead-letter an entry twice).

Crash recovery: at start the consumer first re-reads its own pending entries (a restart under
the same consumer name resumes at once), and on every round XAUTOCLAIMs entries other
consumers left unacknowledged for `claim_idle_ms`. When Redis fails mid-batch the entries stay
pending and come back the same way. SIGTERM / SIGINT stop the loop after the current batch.

Test seam: `FEATURELIB_STREAM_TEST_PAUSE=<point>[,<point>...]` (points: `read`, `claimed`,
`logged`, `applied`) makes the consumer print `featurelib-stream: paused at <point>` to stderr
and sleep, so a test can kill it at a known step.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from types import FrameType
from typing import Any

import redis

from featurelib.errors import FeaturelibError
from featurelib.online.push import Pusher, RowError
from featurelib.online.store import RedisOnlineStore
from featurelib.repo import Repo

__all__ = ["ConsumerStats", "StreamConsumer"]

DATA = b"data"
PAUSE_ENV = "FEATURELIB_STREAM_TEST_PAUSE"
Entry = tuple[bytes, dict[bytes, bytes] | None]
Log = Callable[[str], None]


@dataclass
class ConsumerStats:
    """What a consumer run handled."""

    messages: int = 0  # entries handled (acknowledged)
    applied: int = 0  # events logged and served (new)
    duplicates: int = 0  # events skipped: their id was already applied
    resumed: int = 0  # events an interrupted run had logged; online update redone
    dead: int = 0  # entries sent to the dead-letter stream
    batches: int = 0
    failures: int = 0  # batches left pending after an error (retried later)


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class StreamConsumer:
    """Consumes `stream_key` as `consumer` of `group`, pushing events into `source_name`."""

    def __init__(
        self,
        store: RedisOnlineStore,
        repo: Repo,
        source_name: str,
        stream_key: str,
        group: str,
        consumer: str,
        batch_size: int = 500,
        block_ms: int = 1000,
        claim_idle_ms: int = 30000,
        *,
        event_id_field: str | None = None,
        now: Callable[[], datetime] | None = None,
        log: Log | None = _stderr,
    ) -> None:
        if batch_size < 1 or block_ms < 1 or claim_idle_ms < 1:
            raise FeaturelibError(
                "batch_size, block_ms and claim_idle_ms must be positive",
                where=f"stream consumer {consumer!r}",
            )
        self.store = store
        self.client = store.client
        self.source_name = source_name
        self.stream = stream_key
        self.dead_stream = f"{stream_key}:dead"
        self.group = group
        self.consumer = consumer
        self.batch_size = batch_size
        self.block_ms = self._fit_block(block_ms)
        self.claim_idle_ms = claim_idle_ms
        self.now = now
        self.log = log
        self.pusher = Pusher(
            store,
            repo,
            source_name,
            event_id_field=event_id_field,
            owner=consumer,
            lease_s=claim_idle_ms / 1000,
            hook=self._checkpoint,
        )
        self.stats = ConsumerStats()
        self._stop = threading.Event()
        self._cursor: bytes | str = "0-0"
        self._pauses = {p.strip() for p in os.environ.get(PAUSE_ENV, "").split(",") if p.strip()}

    # ------------------------------------------------------------------ control

    def stop(self) -> None:
        """Ask the loop to stop after the current batch."""
        self._stop.set()

    def ensure_group(self) -> None:
        """Create the consumer group (from the stream's start, creating the stream) if missing."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def run(
        self, max_messages: int | None = None, idle_exit_s: float | None = None
    ) -> ConsumerStats:
        """Consume until stopped (SIGTERM/SIGINT or `stop()`), until this run handled
        `max_messages` entries, or until nothing arrived for `idle_exit_s` seconds. Returns the
        consumer's stats (cumulative over runs)."""
        self._stop.clear()
        self.ensure_group()
        restore = self._install_signals()
        self._say(
            f"consuming {self.stream} as {self.group}/{self.consumer} into source "
            f"{self.source_name!r} (dead letters: {self.dead_stream}); SIGTERM/SIGINT stop"
        )
        own_pending = True  # entries delivered to this consumer name before a restart
        last_activity = time.monotonic()
        failures = 0
        limit = None if max_messages is None else self.stats.messages + max_messages
        try:
            while not self._stop.is_set():
                if limit is not None and self.stats.messages >= limit:
                    break
                count = self.batch_size
                if limit is not None:
                    count = min(count, limit - self.stats.messages)
                try:
                    entries: list[Entry] = []
                    if own_pending:
                        entries = self._read("0", count, block=None)
                        own_pending = bool(entries)
                    if not entries:
                        entries = self._reclaim(count)
                    if not entries:
                        entries = self._read(">", count, block=self.block_ms)
                    if not entries:
                        if idle_exit_s is not None and (
                            time.monotonic() - last_activity >= idle_exit_s
                        ):
                            break
                        continue
                    last_activity = time.monotonic()
                    self._checkpoint("read")
                    self.handle(entries)
                    failures = 0
                except (redis.RedisError, FeaturelibError) as exc:
                    failures += 1
                    self.stats.failures += 1
                    delay = min(0.1 * 2**failures, 5.0)
                    self._say(
                        f"batch failed ({type(exc).__name__}: {exc}); entries stay pending, "
                        f"retrying in {delay:.1f}s"
                    )
                    own_pending = True  # our own unacknowledged entries: retry them first
                    self._stop.wait(delay)
        finally:
            restore()
        return self.stats

    # ------------------------------------------------------------------ one batch

    def handle(self, entries: list[Entry]) -> None:
        """Push the valid events of `entries`, dead-letter the bad ones, acknowledge all."""
        self.stats.batches += 1
        rows: list[dict[str, Any]] = []
        row_entries: list[tuple[bytes, bytes]] = []
        dead: list[tuple[bytes, bytes, str]] = []
        gone: list[bytes] = []
        for entry_id, fields in entries:
            if fields is None:  # deleted from the stream while pending
                gone.append(entry_id)
                continue
            raw = fields.get(DATA)
            if raw is None:
                names = sorted(k.decode(errors="replace") for k in fields)
                dead.append((entry_id, b"", f"entry has no 'data' field (fields: {names})"))
                continue
            try:
                event = json.loads(raw)
            except (ValueError, UnicodeDecodeError) as exc:
                dead.append((entry_id, raw, f"data is not valid JSON: {exc}"))
                continue
            if not isinstance(event, dict):
                dead.append(
                    (entry_id, raw, f"data must be a JSON object, got {type(event).__name__}")
                )
                continue
            rows.append(event)
            row_entries.append((entry_id, raw))
        if gone:
            self.client.xack(self.stream, self.group, *gone)
            self.stats.messages += len(gone)
        if rows:
            batch, errors = self.pusher.validate(rows)
            dead += [(row_entries[e.row][0], row_entries[e.row][1], _reasons(e)) for e in errors]
        else:
            batch = None
        if dead:
            self._dead_letter(dead)
        if batch is not None and batch.positions:
            entry_ids = [row_entries[i][0] for i in batch.positions]
            ids = batch.ids if batch.ids is not None else [e.decode() for e in entry_ids]
            try:
                result = self.pusher.apply(batch, ids=ids, now=self._now())
            except (redis.RedisError, FeaturelibError):
                raise
            except Exception as exc:  # a data problem the validation did not foresee
                self._say(f"batch failed ({type(exc).__name__}: {exc}); retrying event by event")
                self._one_by_one(batch.positions, row_entries, rows)
                return
            self.client.xack(self.stream, self.group, *entry_ids)
            self.stats.messages += len(entry_ids)
            self.stats.applied += result.appended
            self.stats.duplicates += result.duplicates
            self.stats.resumed += result.resumed

    def _one_by_one(
        self, positions: list[int], row_entries: list[tuple[bytes, bytes]], rows: list[Any]
    ) -> None:
        for i in positions:
            entry_id, raw = row_entries[i]
            batch, _ = self.pusher.validate([rows[i]])
            ids = batch.ids if batch.ids is not None else [entry_id.decode()]
            try:
                result = self.pusher.apply(batch, ids=ids, now=self._now())
            except (redis.RedisError, FeaturelibError):
                raise
            except Exception as exc:
                self._dead_letter([(entry_id, raw, f"push failed: {type(exc).__name__}: {exc}")])
                continue
            self.client.xack(self.stream, self.group, entry_id)
            self.stats.messages += 1
            self.stats.applied += result.appended
            self.stats.duplicates += result.duplicates
            self.stats.resumed += result.resumed

    def _dead_letter(self, dead: list[tuple[bytes, bytes, str]]) -> None:
        """XADD each bad entry to the dead-letter stream, then XACK it (in that order)."""
        pipe = self.client.pipeline(transaction=False)
        for entry_id, raw, reason in dead:
            pipe.xadd(
                self.dead_stream,
                {
                    "data": raw,
                    "reason": reason,
                    "source": self.source_name,
                    "original_id": entry_id,
                    "stream": self.stream,
                    "group": self.group,
                    "consumer": self.consumer,
                },
            )
        pipe.xack(self.stream, self.group, *[entry_id for entry_id, _, _ in dead])
        pipe.execute()
        self.stats.dead += len(dead)
        self.stats.messages += len(dead)
        self._say(f"{len(dead)} bad event(s) sent to {self.dead_stream}: {dead[0][2]}")

    # ------------------------------------------------------------------ Redis reads

    def _read(self, start: str, count: int, block: int | None) -> list[Entry]:
        reply: Any = self.client.xreadgroup(
            self.group, self.consumer, {self.stream: start}, count=count, block=block
        )
        entries: list[Entry] = []
        for _, stream_entries in reply or []:
            entries += [(entry_id, fields or None) for entry_id, fields in stream_entries]
        return entries

    def _reclaim(self, count: int) -> list[Entry]:
        """Entries pending (unacknowledged) for longer than `claim_idle_ms`, now ours."""
        reply: Any = self.client.xautoclaim(
            self.stream,
            self.group,
            self.consumer,
            min_idle_time=self.claim_idle_ms,
            start_id=self._cursor,
            count=count,
        )
        self._cursor = reply[0]
        entries: list[Entry] = [(entry_id, fields or None) for entry_id, fields in reply[1]]
        deleted = reply[2] if len(reply) > 2 else []
        if deleted:  # dropped from the pending list by XAUTOCLAIM itself (Redis >= 7)
            self._say(f"{len(deleted)} pending entries were deleted from {self.stream}")
        if entries:
            self._say(
                f"reclaimed {len(entries)} pending entries idle for >= {self.claim_idle_ms}ms"
            )
        return entries

    # ------------------------------------------------------------------ helpers

    def _now(self) -> datetime | None:
        return self.now() if self.now is not None else None

    def _fit_block(self, block_ms: int) -> int:
        """Keep the blocking read shorter than the client's socket timeout."""
        kwargs = self.client.connection_pool.connection_kwargs
        timeout = kwargs.get("socket_timeout")
        if timeout and block_ms >= timeout * 1000:
            return max(int(timeout * 1000 * 0.8), 1)
        return block_ms

    def _checkpoint(self, point: str) -> None:
        if point in self._pauses:
            _stderr(f"featurelib-stream: paused at {point}")
            time.sleep(3600)

    def _say(self, message: str) -> None:
        if self.log is not None:
            self.log(f"[{self.consumer}] {message}")

    def _install_signals(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous: dict[int, Any] = {
            int(s): signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)
        }

        def handler(signum: int, frame: FrameType | None) -> None:
            self._say(f"{signal.Signals(signum).name}: stopping after the current batch")
            self.stop()
            signal.signal(signum, previous[signum])  # a second signal acts as usual

        for sig in previous:
            signal.signal(sig, handler)

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore


def _reasons(error: RowError) -> str:
    return "; ".join(error.reasons)
