"""Point-in-time sawtooth window aggregations, vectorized (design §3).

For window W with hop h, the value at t aggregates the entity's events with
floor(t, h) - W <= e <= t. We split that range in two and merge partial-aggregate states
(`states.py`) of each part exactly:

* the *batch part*, whole hops [floor(t,h) - W, floor(t,h)): events are summarized per
  (entity, hop) into tiles, tiles into aligned dyadic blocks of 2^L hops, and each distinct
  (entity, floor(t,h)) query merges the <= 2*log2(W/h) blocks covering its range;
* the *partial hop*, events in [floor(t,h), t]: with events sorted by (entity, event time,
  created, source order), these are one contiguous index range, ending at the last event <= t
  (a backward as-of join). It is covered by aligned dyadic blocks of 2^L events.

Only group-by merges and joins, no loops over rows: O((events + spine) * log(window)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from featurelib.aggregation import Window
from featurelib.durations import to_micros
from featurelib.offline.states import State

HOP = "__hop"
EVENT_US = "__e_us"
CREATED = "__created"
ORDER = "__order"
SPINE_US = "__t_us"
ROW = "__row"
INDEX = "__i"
QID = "__qid"
LEVEL = "__level"
BLOCK = "__block"
START = "__start"


@dataclass(frozen=True)
class EventFrame:
    """Events of one aggregation view: keys, time columns, and one column per aggregate arg."""

    frame: pl.LazyFrame  # keys, __e_us, __created, __order, a{i}_x
    keys: list[str]
    states: list[State]


def dyadic_blocks(
    start: np.ndarray, end: np.ndarray, max_level: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cover each [start_i, end_i) by aligned blocks [b*2^L, (b+1)*2^L), L <= max_level.

    Returns (range index, level, block number) arrays, at most ~2*max_level+2 blocks per range,
    in increasing position within each range. The loop runs over levels, never over rows.
    """
    a = start.astype(np.int64).copy()
    end = end.astype(np.int64)
    rows: list[np.ndarray] = []
    levels: list[np.ndarray] = []
    blocks: list[np.ndarray] = []
    active = np.flatnonzero(a < end)
    while active.size:
        aa, bb = a[active], end[active]
        lowest = aa & -aa
        align = np.where(aa == 0, max_level, np.frexp(lowest.astype(np.float64))[1] - 1)
        span = np.frexp((bb - aa).astype(np.float64))[1] - 1
        level = np.minimum(np.minimum(align, span), max_level).astype(np.int64)
        rows.append(active)
        levels.append(level)
        blocks.append(aa >> level)
        a[active] = aa + (np.int64(1) << level)
        active = active[a[active] < end[active]]
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, empty
    return np.concatenate(rows), np.concatenate(levels), np.concatenate(blocks)


def _merges(states: list[State]) -> list[pl.Expr]:
    return [e for s in states for e in s.group_merge()]


def _columns(states: list[State]) -> list[str]:
    return [c for s in states for c in s.columns]


@dataclass
class _IndexBlocks:
    """States of aligned blocks of 2^L consecutive events (in sorted event order), by level."""

    events: pl.DataFrame  # __i + event states, sorted by __i
    states: list[State]
    levels: dict[int, pl.DataFrame] = field(default_factory=dict)

    def level(self, level: int) -> pl.DataFrame:
        if level not in self.levels:
            cols = _columns(self.states)
            if level == 0:
                frame = self.events.select(pl.col(INDEX).cast(pl.Int64).alias(BLOCK), *cols)
            else:
                frame = (
                    self.events.with_columns(
                        (pl.col(INDEX).cast(pl.Int64) // (1 << level)).alias(BLOCK)
                    )
                    .group_by(BLOCK, maintain_order=True)
                    .agg(_merges(self.states))
                )
            self.levels[level] = frame.with_columns(pl.lit(level, pl.Int64).alias(LEVEL))
        return self.levels[level]


def _cover(
    ids: np.ndarray, start: np.ndarray, end: np.ndarray, max_level: int, id_name: str
) -> pl.DataFrame:
    rows, levels, blocks = dyadic_blocks(start, end, max_level)
    return pl.DataFrame(
        {
            id_name: pl.Series(ids[rows], dtype=pl.UInt32),
            LEVEL: levels,
            BLOCK: blocks,
            START: blocks << levels,
        }
    )


def _partial_states(
    queries: pl.DataFrame,
    index_blocks: _IndexBlocks,
    states: list[State],
    hop_us: int,
    group_start: pl.DataFrame,
    keys: list[str],
) -> pl.DataFrame:
    """States of the events in each query's own hop with e <= t: `ROW` + state columns.

    The range depends only on the last visible event (its index fixes the entity, the hop and
    the range start), so it is computed once per distinct event, however large the spine.
    """
    spans = (
        queries.filter(pl.col(INDEX).is_not_null())
        .with_columns((pl.col(SPINE_US) // hop_us).alias(HOP))
        .filter(pl.col(EVENT_US) // hop_us == pl.col(HOP))
        .join(group_start, on=[*keys, HOP], how="inner")
        .select(ROW, INDEX, "__gstart")
    )
    ranges = spans.select(INDEX, "__gstart").unique()
    lo = ranges["__gstart"].to_numpy().astype(np.int64)
    hi = ranges[INDEX].to_numpy().astype(np.int64) + 1
    max_level = max(int(np.max(hi - lo, initial=1)).bit_length() - 1, 0)
    rows, levels, blocks = dyadic_blocks(lo, hi, max_level)
    cover = pl.DataFrame(
        {
            INDEX: ranges[INDEX].to_numpy()[rows],
            LEVEL: levels,
            BLOCK: blocks,
            START: blocks << levels,
        },
        schema_overrides={INDEX: ranges.schema[INDEX]},
    )
    cols = _columns(states)
    block_frames = [
        index_blocks.level(level).select(LEVEL, BLOCK, *cols) for level in range(max_level + 1)
    ]
    per_event = (
        cover.join(pl.concat(block_frames, how="vertical_relaxed"), on=[LEVEL, BLOCK], how="inner")
        .sort([INDEX, START])
        .group_by(INDEX, maintain_order=True)
        .agg(_merges(states))
    )
    return spans.select(ROW, INDEX).join(per_event, on=INDEX, how="inner").drop(INDEX)


def _tile_blocks(
    tiles: pl.DataFrame, keys: list[str], states: list[State], max_level: int
) -> pl.DataFrame:
    """States of aligned blocks of 2^L hops per entity, for every level 0..max_level."""
    cols = _columns(states)
    level0 = tiles.select(*keys, pl.lit(0, pl.Int64).alias(LEVEL), pl.col(HOP).alias(BLOCK), *cols)
    out = [level0]
    for level in range(1, max_level + 1):
        merged = (
            tiles.with_columns((pl.col(HOP) // (1 << level)).alias(BLOCK))
            .group_by([*keys, BLOCK], maintain_order=True)
            .agg(_merges(states))
            .with_columns(pl.lit(level, pl.Int64).alias(LEVEL))
        )
        out.append(merged.select(level0.columns))
    return pl.concat(out, how="vertical_relaxed")


def aggregate_windows(
    events: EventFrame,
    spine: pl.DataFrame,
    windows: list[tuple[Window, list[tuple[str, State]]]],
    progress: Callable[[str], None] | None = None,
) -> pl.DataFrame:
    """Window features for each spine row (spine holds `__row`, keys and `__t_us`).

    `windows` lists, per window, the (output column, state) pairs computed over it.
    Returns `__row` plus one column per output.
    """
    keys = events.keys
    sorted_events = (
        events.frame.sort([*keys, EVENT_US, CREATED, ORDER], nulls_last=False)
        .with_row_index(INDEX)
        .collect()
    )
    all_states = events.states
    event_states = sorted_events.select(
        INDEX,
        *keys,
        EVENT_US,
        *[e for s in all_states for e in s.event_exprs(pl.col(f"{s.prefix}_x"))],
    )
    index_blocks = _IndexBlocks(event_states, all_states)
    # The last event at or before t per entity; ties in event time are all visible at t.
    last_event = (
        event_states.select(*keys, EVENT_US, INDEX)
        .unique(subset=[*keys, EVENT_US], keep="last", maintain_order=True)
        .sort(EVENT_US)
    )
    queries = spine.sort(SPINE_US).join_asof(
        last_event,
        left_on=SPINE_US,
        right_on=EVENT_US,
        by=keys,
        strategy="backward",
        check_sortedness=False,
    )
    result = spine.select(ROW)
    by_hop: dict[int, list[tuple[Window, list[tuple[str, State]]]]] = {}
    for window, outs in windows:
        by_hop.setdefault(to_micros(window.hop), []).append((window, outs))
    for hop_us, group in by_hop.items():
        states = list({s.prefix: s for _, outs in group for _, s in outs}.values())
        with_hop = event_states.with_columns((pl.col(EVENT_US) // hop_us).alias(HOP))
        tiles = with_hop.group_by([*keys, HOP], maintain_order=True).agg(
            *_merges(states), pl.col(INDEX).min().alias("__gstart")
        )
        partial = _partial_states(
            queries, index_blocks, states, hop_us, tiles.select(*keys, HOP, "__gstart"), keys
        )
        max_level = max(w.hops.bit_length() - 1 for w, _ in group)
        blocks = _tile_blocks(tiles, keys, states, max_level)
        with_qhop = spine.with_columns((pl.col(SPINE_US) // hop_us).alias(HOP))
        distinct = with_qhop.select(*keys, HOP).unique().with_row_index(QID)
        rows = with_qhop.join(distinct, on=[*keys, HOP], how="left", nulls_equal=True).select(
            ROW, QID
        )
        cols = _columns(states)
        partial = rows.join(partial.rename({c: c + "__b" for c in cols}), on=ROW, how="left")
        for window, outs in group:
            qhop = distinct[HOP].to_numpy()
            cover = _cover(distinct[QID].to_numpy(), qhop - window.hops, qhop, max_level, QID)
            cover = cover.join(distinct.select(QID, *keys), on=QID, how="left")
            window_states = [s for _, s in outs]
            batch = (
                cover.join(blocks, on=[*keys, LEVEL, BLOCK], how="inner")
                .sort([QID, START])
                .group_by(QID, maintain_order=True)
                .agg(_merges(window_states))
            )
            renamed = batch.rename({c: c + "__a" for c in _columns(window_states)})
            merged = partial.join(renamed, on=QID, how="left").select(
                ROW, *[e for s in window_states for e in s.pair_merge("__a", "__b")]
            )
            result = result.join(
                merged.select(ROW, *[s.finalize().alias(name) for name, s in outs]),
                on=ROW,
                how="left",
            )
            if progress:
                progress(
                    f"  window {window.label}: {len(distinct):,} distinct (entity, hop) queries"
                )
    return result
