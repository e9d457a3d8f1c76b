"""Streaming scoring: consume a Redis Stream of events, push them into their source (features
update), score, and add the predictions to an output stream (`featurelib score-stream`).

Input entries (fields; at least one of the two):

* `data`: one source event as a JSON object, exactly as `featurelib stream` reads it. It is
  validated and pushed with `featurelib.online.push.Pusher` (offline push log, then online
  store; de-duplicated by event id, else the stream entry id). Unless the entry also has
  `score`, the event itself is then scored: its entity keys and request fields (e.g. a
  flight's carrier, origin, dest, tailnum, scheduled_departure, distance) are the inputs.
* `score`: a JSON object or array of objects: rows to score (keys + request fields, plus an
  optional `request_id` each), without pushing anything.

Scoring goes through `serving.core.ScoringCore.infer`, as a REST request would, at the core's
clock: after the whole batch was pushed, so a batch's predictions see the batch's events. With
a pinned model (`NAME@ALIAS`, `NAME@3`) a batch's events are scored in one call; with a bare
`NAME` every entry is its own request, so the champion/challenger split stays sticky per entity.
`score` rows are always one request per entry (like a REST request: a row lacking an input
column gets that entry refused, not nulls).

Output entries (one per scored row), fields: `id` (the event's `event_id` or de-duplication
id, the row's `request_id`, or `<entry id>:<row>`), `entry_id` (input entry), `request_id`
(the scoring request: the feature log's `request_id`), `model`, `model_version`, `prediction`
(float as text), `keys` (JSON object of the entity keys).

Delivery: the predictions of a batch and the acknowledgement of its entries are written in one
MULTI/EXEC, so they land together; a crash before that re-delivers the entries (pushes are
de-duplicated, scoring is repeated with the same request ids): at-least-once, and in practice
once. Bad entries (unparseable, invalid event, inputs the model refuses) go to the dead-letter
stream `<stream>:dead` with the reason, as `featurelib stream` does; a failing store or registry
leaves the batch pending and it is retried. Test seam: the pause points of
`featurelib.online.stream` plus `pushed` (batch pushed) and `scored` (before the MULTI).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from featurelib.online.stream import ConsumerStats, Entry, StreamConsumer
from serving.errors import BadRequestError, ServingError
from serving.feature_log import service_keys

__all__ = ["ScoringStats", "StreamScorer", "open_stream_scorer"]

SCORE = b"score"
DATA = b"data"
Log = Callable[[str], None]
Fields = dict[Any, Any]  # a stream entry's fields


@dataclass
class ScoringStats(ConsumerStats):
    """What a streaming-scoring run handled (on top of the push counters)."""

    scored: int = 0  # rows scored
    outputs: int = 0  # prediction entries written


@dataclass
class _Work:
    """One entry's part of a batch: its event (index into the pushed rows) or its rows."""

    entry_id: bytes
    raw: bytes
    event: int | None = None
    rows: list[dict[str, Any]] | None = None
    typed: bool = False  # rows are the pushed event (typed), not JSON `score` rows


class StreamScorer(StreamConsumer):
    """Pushes, scores and writes predictions for `stream` (see the module docstring); `core` is
    a `serving.core.ScoringCore` (anything with its `infer`)."""

    def __init__(
        self,
        core: Any,
        model: str,
        output_stream: str,
        *args: Any,
        version: str | None = None,
        resources: list[Callable[[], None]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.core = core
        self._resources = resources or []
        self._key_cache: dict[tuple[str, int], list[str]] = {}
        self.model = model
        self.version = version
        self.output_stream = output_stream
        self.stats: ScoringStats = ScoringStats()

    def handle(self, entries: list[Entry]) -> None:
        """Push the batch's events, score, write predictions and acknowledge in one step."""
        self.stats.batches += 1
        work: list[_Work] = []
        events: list[dict[str, Any]] = []
        dead: list[tuple[bytes, bytes, str]] = []
        gone: list[bytes] = []
        for entry_id, fields in entries:
            if fields is None:  # deleted from the stream while pending
                gone.append(entry_id)
                continue
            item, problem = self._parse(entry_id, fields, events)
            if problem is not None:
                dead.append((entry_id, fields.get(DATA) or fields.get(SCORE) or b"", problem))
            else:
                work.append(item)
        if events:
            batch, errors = self.pusher.validate(events)
            bad_events = {e.row: "; ".join(e.reasons) for e in errors}
            for item in [w for w in work if w.event is not None and w.event in bad_events]:
                dead.append((item.entry_id, item.raw, bad_events[item.event or 0]))
                work.remove(item)
            if batch.positions:
                entry_of = {w.event: w.entry_id for w in work if w.event is not None}
                ids = batch.ids or [entry_of[p].decode() for p in batch.positions]
                result = self.pusher.apply(batch, ids=ids, now=self._now())
                self._checkpoint("pushed")
                self.stats.applied += result.appended
                self.stats.duplicates += result.duplicates
                self.stats.resumed += result.resumed
                labels = [events[p].get("event_id") or i for p, i in zip(batch.positions, ids)]
                frame = batch.frame.with_columns(pl.Series("__id", labels, dtype=pl.String))
                row_of = {p: i for i, p in enumerate(batch.positions)}
                for item in work:
                    if item.event is not None and item.rows is None:
                        item.rows = [frame.row(row_of[item.event], named=True)]
                        item.typed = True
        if dead:
            self._dead_letter(dead)
        outputs = self._score([w for w in work if w.rows], dead)
        self._checkpoint("scored")
        pipe = self.client.pipeline(transaction=True)
        for output in outputs:
            pipe.xadd(self.output_stream, output)
        done = gone + [w.entry_id for w in work if w.entry_id not in {d[0] for d in dead}]
        if done:
            pipe.xack(self.stream, self.group, *done)
        pipe.execute()
        self.stats.messages += len(done)
        self.stats.outputs += len(outputs)

    def _parse(
        self, entry_id: bytes, fields: dict[bytes, bytes], events: list[dict[str, Any]]
    ) -> tuple[_Work, str | None]:
        raw_event, raw_score = fields.get(DATA), fields.get(SCORE)
        item = _Work(entry_id, raw_event or raw_score or b"")
        if raw_event is None and raw_score is None:
            names = sorted(k.decode(errors="replace") for k in fields)
            return item, f"entry has neither a 'data' nor a 'score' field (fields: {names})"
        if raw_score is not None:
            try:
                rows = json.loads(raw_score)
            except (ValueError, UnicodeDecodeError) as exc:
                return item, f"score is not valid JSON: {exc}"
            rows = [rows] if isinstance(rows, dict) else rows
            if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
                return item, "score must be a JSON object or a non-empty array of objects"
            item.rows = rows
        if raw_event is not None:
            try:
                event = json.loads(raw_event)
            except (ValueError, UnicodeDecodeError) as exc:
                return item, f"data is not valid JSON: {exc}"
            if not isinstance(event, dict):
                return item, f"data must be a JSON object, got {type(event).__name__}"
            item.event = len(events)
            events.append(event)
        return item, None

    # ------------------------------------------------------------------ scoring

    def _score(self, work: list[_Work], dead: list[tuple[bytes, bytes, str]]) -> list[Fields]:
        """Prediction entries for `work`; entries the model refuses are dead-lettered."""
        if not work:
            return []
        outputs: list[Fields] = []
        events = [w for w in work if w.typed]
        if self.version is not None and events:  # pinned: the batch's events in one request
            try:
                outputs += self._score_group(events, f"{self.stream}/{events[0].entry_id.decode()}")
                work = [w for w in work if not w.typed]
            except ServingError as exc:
                if not _refused(exc):
                    raise
                self._say(f"batch refused ({exc.what}); scoring entry by entry")
        refused: list[tuple[bytes, bytes, str]] = []
        for item in work:
            try:
                outputs += self._score_group([item], f"{self.stream}/{item.entry_id.decode()}")
            except ServingError as exc:
                if not _refused(exc):
                    raise
                refused.append((item.entry_id, item.raw, f"scoring refused: {exc}"))
        if refused:
            self._dead_letter(refused)
            dead += refused
        return outputs

    def _score_group(self, work: list[_Work], request_id: str) -> list[Fields]:
        rows = [row for item in work for row in item.rows or []]
        try:
            frame = pl.DataFrame(rows, infer_schema_length=None, strict=False)
        except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
            raise BadRequestError(f"cannot read the rows to score: {exc}") from None
        result = self.core.infer(
            self.model, frame.drop("__id", "request_id", strict=False),
            version=self.version, request_id=request_id,
        )  # fmt: skip
        keys = [c for c in self._keys(result.model, result.model_version) if c in frame.columns]
        key_rows = frame.select(keys).to_dicts() if keys else [{} for _ in rows]
        predictions = np.asarray(result.predictions, dtype=np.float64).tolist()
        outputs: list[Fields] = []
        position = 0
        for item in work:
            entry = item.entry_id.decode()
            for k, row in enumerate(item.rows or []):
                row_id = row.get("__id") or row.get("request_id")
                outputs.append(
                    {
                        "id": str(row_id) if row_id is not None else f"{entry}:{k}",
                        "entry_id": entry,
                        "request_id": result.request_id,
                        "model": result.model,
                        "model_version": str(result.model_version),
                        "prediction": repr(predictions[position]),
                        "keys": json.dumps(key_rows[position], default=str),
                    }
                )
                position += 1
        self.stats.scored += len(rows)
        return outputs

    def _keys(self, model: str, version: int) -> list[str]:
        """The entity keys of the feature service `model`/`version` was trained on."""
        cached = self._key_cache.get((model, version))
        if cached is None:
            service = self.core.registry.get(model, version).service
            found = service_keys(self.core.definitions.repo, service) or []
            cached = self._key_cache[(model, version)] = found
        return cached

    def run(
        self, max_messages: int | None = None, idle_exit_s: float | None = None
    ) -> ScoringStats:
        """Consume, push, score and write predictions (see `StreamConsumer.run`)."""
        super().run(max_messages, idle_exit_s)
        return self.stats

    def close(self) -> None:
        """Close what `open_stream_scorer` opened for this scorer."""
        for close in self._resources:
            close()
        self._resources = []


def _refused(error: ServingError) -> bool:
    """A client error (bad or unusable input): dead-letter; anything else is retried."""
    return 400 <= error.status < 500 and error.status != 404


def open_stream_scorer(
    root: Path,
    *,
    model: str,
    source: str,
    stream: str,
    output_stream: str,
    group: str,
    consumer: str,
    redis_url: str | None = None,
    registry_url: str | None = None,
    now: datetime | None = None,
    batch_size: int = 500,
    block_ms: int = 1000,
    claim_idle_ms: int = 30_000,
    event_id_field: str | None = None,
    log_features: bool = True,
    config_path: Path | None = None,
    log: Log | None = None,
) -> StreamScorer:
    """A `StreamScorer` with everything it needs opened (`.close()` closes it all)."""
    from featurelib.online.api import open_store
    from featurelib.online.live import LiveDefinitions
    from serving.config import ServeConfig
    from serving.core import ScoringCore
    from serving.feature_log import FeatureLogger
    from serving.registry import ModelRegistry, split_model_ref
    from serving.server import replay_clock

    name, ref = split_model_ref(model)
    store = open_store(root, redis_url)
    registry = ModelRegistry.open(registry_url, repo_root=root)
    # The serve configuration's routing, shadows, definitions refresh and feature log apply
    # here too, as in `featurelib serve`.
    config = ServeConfig.load(config_path)
    definitions = LiveDefinitions(root, interval=config.definitions_interval_s)
    config = replace(config, models=(name,), max_rows=max(config.max_rows, batch_size))
    clock = replay_clock(now)  # the same feature clock as `featurelib serve --now`
    logger = None
    if log_features:
        logger = FeatureLogger(
            root,
            store,
            definitions=definitions,
            sample_rate=config.log_sample_rate,
            flush_interval_s=config.log_flush_interval_s,
            log=log,
        )
    core = ScoringCore(
        root, store=store, registry=registry, definitions=definitions, config=config,
        logger=logger, clock=clock,
    )  # fmt: skip
    served = core.catalog.served(name)  # fails now, not per batch, when the model is unknown
    if ref is not None:
        served.resolve(ref)
    resources = [core.close, *([logger.close] if logger else []), definitions.close]
    resources += [registry.close, store.client.close]
    return StreamScorer(
        core, name, output_stream, store, definitions.repo, source, stream, group, consumer,
        batch_size, block_ms, claim_idle_ms, version=ref, event_id_field=event_id_field,
        now=clock, log=log, resources=resources,
    )  # fmt: skip
