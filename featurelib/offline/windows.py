"""Point-in-time sawtooth window aggregations, vectorized (design §3).

For window W with hop h, the value at t aggregates the entity's events with
floor(t, h) - W <= e <= t. We split that range in two and merge partial-aggregate states
(`states.py`) of each part exactly:

* the *batch part*, whole hops [floor(t,h) - W, floor(t,h)): events are summarized per
  (entity, hop) into tiles, sorted by (entity, hop). The tiles of one query are a contiguous
  range of that order (two as-of lookups), covered by aligned dyadic blocks of 2^L tiles;
* the *partial hop*, events in [floor(t,h), t]: with events sorted by (entity, event time,
  created, source order) these are a contiguous range too, ending at the last event <= t, and
  are covered by dyadic blocks of 2^L events.

Block states are built level by level (each level merges pairs of the previous one) and read
by position, ranges are de-duplicated before they are covered, and empty hops cost nothing,
so the work is O((events + distinct ranges) * log(range length)) with no loop over rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from featurelib.aggregation import Window
from featurelib.durations import format_duration, to_micros
from featurelib.offline.states import State

HOP = "__hop"
EVENT_US = "__e_us"
CREATED = "__created"
ORDER = "__order"
SPINE_US = "__t_us"
ROW = "__row"
INDEX = "__i"
RANGE = "__range"


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

    Returns (range index, level, block number) arrays, at most ~2*max_level+2 blocks per range.
    Blocks come out step by step, so within one range they appear in increasing position.
    The loop runs over levels, never over rows.
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
class DyadicBlocks:
    """States of aligned blocks of 2^L consecutive items (events or tiles) of one entity.

    Items are sorted by entity (`__key_id`), then time. Blocks are aligned to the entity's own
    first item, so an entity's values never depend on other entities' data (not even in the
    last bit of a float sum), and appending later items never changes earlier blocks.
    """

    items: pl.DataFrame  # __key_id + state columns, sorted by (entity, time)
    states: list[State]
    levels: list[pl.DataFrame] = field(default_factory=list)
    sizes: np.ndarray = field(init=False)  # items per entity id
    starts: np.ndarray = field(init=False)  # position of each entity's first item

    def __post_init__(self) -> None:
        key_ids = self.items["__key_id"].to_numpy()
        self.sizes = np.bincount(key_ids, minlength=int(key_ids.max(initial=-1)) + 1)
        self.starts = np.concatenate([[0], np.cumsum(self.sizes)[:-1]]).astype(np.int64)

    def _ensure(self, max_level: int) -> None:
        cols = _columns(self.states)
        if not self.levels:
            local = pl.int_range(pl.len(), dtype=pl.Int64).over("__key_id")
            self.levels.append(self.items.select("__key_id", local.alias("__block"), *cols))
        while len(self.levels) <= max_level:
            merged = (
                self.levels[-1]
                .with_columns(pl.col("__block") // 2)
                .group_by(["__key_id", "__block"], maintain_order=True)
                .agg(_merges(self.states))
            )
            self.levels.append(merged)

    def merge_ranges(self, lo: np.ndarray, hi: np.ndarray) -> pl.DataFrame:
        """Merged states of items [lo_i, hi_i), each within one entity: `__range` + states."""
        longest = int(np.max(hi - lo, initial=1))
        max_level = max(longest.bit_length() - 1, 0)
        self._ensure(max_level)
        key = np.searchsorted(self.starts, lo, side="right") - 1
        base = self.starts[key] if len(key) else np.zeros(0, dtype=np.int64)
        rows, levels, blocks = dyadic_blocks(lo - base, hi - base, max_level)
        # Row of (level L, entity k, block b): level offset + entity's first block + b.
        level_offsets = np.cumsum([0] + [lv.height for lv in self.levels[: max_level + 1]])
        entity_offsets = np.stack(
            [
                np.concatenate([[0], np.cumsum((self.sizes + (1 << lv) - 1) >> lv)[:-1]])
                for lv in range(max_level + 1)
            ]
        ).astype(np.int64)
        position = level_offsets[levels] + entity_offsets[levels, key[rows]] + blocks
        table = pl.concat(
            [lv.drop("__key_id", "__block") for lv in self.levels[: max_level + 1]],
            how="vertical_relaxed",
        )
        picked: pl.DataFrame = table[position]
        return (
            picked.with_columns(pl.Series(RANGE, rows, dtype=pl.Int64))
            .group_by(RANGE, maintain_order=True)
            .agg(_merges(self.states))
        )


def _merge_distinct(blocks: DyadicBlocks, lo: np.ndarray, hi: np.ndarray) -> pl.DataFrame:
    """State of items [lo_i, hi_i) for every row i (a null row where the range is empty).

    Rows come sorted by (entity, time), so equal ranges are adjacent: each run of equal
    non-empty ranges is merged once and gathered back (unsorted input is still correct, only
    merged more than once).
    """
    nonempty = lo < hi
    codes = ((lo << 32) | hi)[nonempty]
    starts = np.ones(len(codes), dtype=bool)
    starts[1:] = codes[1:] != codes[:-1]
    ranges = codes[starts]
    merged = blocks.merge_ranges(ranges >> 32, ranges & 0xFFFFFFFF).sort(RANGE).drop(RANGE)
    table = pl.concat([merged.clear(n=1), merged])  # row 0: the empty range's null state
    index = np.zeros(len(lo), dtype=np.int64)
    index[nonempty] = np.cumsum(starts)
    gathered: pl.DataFrame = table[index]
    return gathered


def _composite(key_id: np.ndarray, hop: np.ndarray, base: int) -> np.ndarray:
    """Sortable (entity, hop) codes: entity id in the high bits, clipped hop in the low ones."""
    offset = np.clip(hop - base, 0, (1 << 32) - 1)
    codes: np.ndarray = (key_id.astype(np.int64) << 32) | offset
    return codes


def aggregate_windows(
    events: EventFrame,
    spine: pl.DataFrame,
    windows: list[tuple[Window, list[tuple[str, State]]]],
    progress: Callable[[str], None] | None = None,
) -> pl.DataFrame:
    """Window features for each spine row (spine holds `__row`, keys and `__t_us`).

    `windows` lists, per window, the (output column, state) pairs computed over it.
    Returns `__row` plus one column per output (rows in no particular order).
    """
    keys = events.keys
    sorted_events = (
        events.frame.sort([*keys, EVENT_US, CREATED, ORDER], nulls_last=False)
        .with_row_index(INDEX)
        .with_columns(pl.col(INDEX).cast(pl.Int64))
        .collect()
    )
    all_states = events.states
    event_states = sorted_events.select(
        INDEX,
        pl.struct(keys).rle_id().cast(pl.Int64).alias("__key_id"),
        *keys,
        EVENT_US,
        *[e for s in all_states for e in s.event_exprs(pl.col(f"{s.prefix}_x"))],
    )
    key_ids = event_states.select(*keys, "__key_id").unique(subset=keys)
    # Per spine row: its entity id and the last event at or before t (a backward as-of join
    # takes the last of tied rows, so all events at exactly t are included).
    queries = (
        spine.sort(SPINE_US)
        .join_asof(
            event_states.select(*keys, EVENT_US, INDEX),
            left_on=SPINE_US,
            right_on=EVENT_US,
            by=keys,
            strategy="backward",
            check_sortedness=False,
        )
        .join(key_ids, on=keys, how="left", maintain_order="left")
        .sort(["__key_id", SPINE_US], nulls_last=True)
    )
    known = queries["__key_id"].is_not_null().to_numpy()
    key_id = queries["__key_id"].fill_null(0).to_numpy()
    last_index = queries[INDEX].fill_null(-1).to_numpy().astype(np.int64)
    t_us = queries[SPINE_US].to_numpy()
    columns: dict[str, pl.Series] = {ROW: queries[ROW]}
    by_hop: dict[int, list[tuple[Window, list[tuple[str, State]]]]] = {}
    for window, outs in windows:
        by_hop.setdefault(to_micros(window.hop), []).append((window, outs))
    for hop_us, group in by_hop.items():
        states = list({s.prefix: s for _, outs in group for _, s in outs}.values())
        tiles = (
            event_states.with_columns((pl.col(EVENT_US) // hop_us).alias(HOP))
            .group_by(["__key_id", HOP], maintain_order=True)
            .agg(*_merges(states), pl.col(INDEX).min().alias("__first"))
            .sort(["__key_id", HOP])
        )
        base = int(tiles[HOP].fill_null(0).min() or 0) - 1  # type: ignore[arg-type]
        tile_code = _composite(tiles["__key_id"].to_numpy(), tiles[HOP].to_numpy(), base)
        qhop = np.floor_divide(t_us, hop_us)
        # Partial hop: events from the first one of the query's hop to the last one <= t.
        query_code = _composite(key_id, qhop, base)
        # Sentinel tile past the end, so every searchsorted position can be read.
        padded = np.append(tile_code, -1)
        first = np.append(tiles["__first"].to_numpy(), 0)
        pos = np.searchsorted(tile_code, query_code, side="left")
        found = known & (padded[pos] == query_code)
        lo_p = np.where(found, first[pos], 0).astype(np.int64)
        hi_p = np.where(found, last_index + 1, 0).astype(np.int64)
        partial = _merge_distinct(DyadicBlocks(event_states, states), lo_p, hi_p)
        tile_blocks = DyadicBlocks(tiles, states)
        for window, outs in group:
            # Tiles of the batch part: hop in [qhop - W/h, qhop), found by position.
            lo = np.searchsorted(tile_code, _composite(key_id, qhop - window.hops, base))
            hi = np.searchsorted(tile_code, _composite(key_id, qhop, base))
            lo, hi = np.where(known, lo, 0), np.where(known, hi, 0)
            window_states = [s for _, s in outs]
            batch = _merge_distinct(tile_blocks, lo.astype(np.int64), hi.astype(np.int64))
            wcols = _columns(window_states)
            both = pl.concat(
                [
                    batch.select([pl.col(c).alias(c + "__a") for c in wcols]),
                    partial.select([pl.col(c).alias(c + "__b") for c in wcols]),
                ],
                how="horizontal",
            )
            merged = both.select(*[e for s in window_states for e in s.pair_merge("__a", "__b")])
            for name, state in outs:
                columns[name] = merged.select(state.finalize().alias(name)).to_series()
            if progress:
                progress(f"  window {window.label} (hop {format_duration(window.hop)}) done")
    return pl.DataFrame(columns)
