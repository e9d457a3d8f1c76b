"""Point-in-time sawtooth window aggregations, vectorized (design §3).

For window W with hop h, the value at t aggregates the entity's events with
floor(t, h) - W <= e <= t. We split that range in two:

* the *batch part*: whole hops [floor(t,h) - W, floor(t,h)). Events are summarized per hop into
  tiles (partial-aggregate states), tiles are merged into aligned dyadic blocks (2^L hops), and
  each distinct (entity, floor(t,h)) query merges the <= 2*log2(W/h) blocks that cover its range;
* the *partial hop*: events in [floor(t,h), t], read from cumulative (prefix) states within the
  hop with one backward as-of join on event time.

Both parts are states (see `states.py`) merged exactly, so there are no loops over rows and the
cost is O(events * log(W/h) + spine rows * log(W/h)).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

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
QID = "__qid"


@dataclass(frozen=True)
class EventFrame:
    """Events of one aggregation view: keys, time columns, and one column per aggregate arg."""

    frame: pl.LazyFrame  # keys, __e_us, __created, __order, a{i}_x
    keys: list[str]
    states: list[State]


def last_n_prefix(events: pl.LazyFrame, state: State, group: list[str]) -> pl.LazyFrame:
    """Add the cumulative last-k list (most recent last) of non-null values within each group."""
    k = state.fn.k
    assert k is not None
    x = pl.col(f"{state.prefix}_x")
    rank = f"{state.prefix}_rank"
    ranked = events.with_columns(x.is_not_null().cast(pl.Int64).cum_sum().over(group).alias(rank))
    shifted = [x.shift(j).over(group) for j in reversed(range(k))]
    lists = (
        ranked.filter(x.is_not_null())
        .select(*group, rank, pl.concat_list(shifted).list.drop_nulls().alias(state.name("l")))
    )
    joined = ranked.join(lists, on=[*group, rank], how="left", maintain_order="left")
    return joined.drop(rank)


def prefix_states(events: EventFrame, hop_us: int) -> pl.LazyFrame:
    """Cumulative states within each (entity, hop), one row per (entity, event time)."""
    group = [*events.keys, HOP]
    frame = events.frame.with_columns((pl.col(EVENT_US) // hop_us).alias(HOP)).sort(
        [*events.keys, EVENT_US, CREATED, ORDER], nulls_last=False
    )
    exprs: list[pl.Expr] = []
    for state in events.states:
        if state.fn.fn == "last_n":
            frame = last_n_prefix(frame, state, group)
        else:
            exprs.extend(state.prefix_exprs(pl.col(f"{state.prefix}_x"), group))
    if exprs:
        frame = frame.with_columns(exprs)
    cols = [c for s in events.states for c in s.columns]
    # Ties in event time: every tied event is visible at once, so keep the last cumulative row.
    return (
        frame.select(*group, EVENT_US, *cols)
        .unique(subset=[*events.keys, EVENT_US], keep="last", maintain_order=True)
    )


def dyadic_blocks(
    start: np.ndarray, end: np.ndarray, max_level: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cover each [start_i, end_i) (in hops) by aligned blocks [b*2^L, (b+1)*2^L), L <= max_level.

    Returns (row index, level, block number) arrays; at most ~2*max_level+2 blocks per range.
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


def block_states(tiles: pl.DataFrame, events: EventFrame, max_level: int) -> pl.DataFrame:
    """States of aligned blocks of 2^L hops for every level 0..max_level."""
    merges = [e for s in events.states for e in s.group_merge()]
    cols = [c for s in events.states for c in s.columns]
    level0 = tiles.select(*events.keys, pl.lit(0, pl.Int64).alias("__level"), pl.col(HOP).alias("__block"), *cols)
    out = [level0]
    ordered = tiles.sort([*events.keys, HOP])
    for level in range(1, max_level + 1):
        merged = (
            ordered.with_columns((pl.col(HOP) // (1 << level)).alias("__block"))
            .group_by([*events.keys, "__block"], maintain_order=True)
            .agg(merges)
            .with_columns(pl.lit(level, pl.Int64).alias("__level"))
        )
        out.append(merged.select(level0.columns))
    return pl.concat(out, how="vertical_relaxed")


def aggregate_windows(
    events: EventFrame,
    spine: pl.DataFrame,
    windows: list[tuple[Window, list[tuple[str, State]]]],
    progress: Callable[[str], None] | None = None,
) -> pl.DataFrame:
    """Window features for each spine row (spine holds keys, `__t_us` and `__row`).

    `windows` lists, per window, the (output column, state) pairs computed over it.
    Returns a frame with `__row` and one column per output, in spine-row order.
    """
    keys = events.keys
    result = spine.select("__row")
    by_hop: dict[int, list[tuple[Window, list[tuple[str, State]]]]] = {}
    for window, outs in windows:
        by_hop.setdefault(to_micros(window.hop), []).append((window, outs))
    for hop_us, group in by_hop.items():
        prefix = prefix_states(events, hop_us).collect()
        tiles = prefix.unique(subset=[*keys, HOP], keep="last", maintain_order=True)
        max_level = max(int(np.log2(w.hops)) for w, _ in group)
        blocks = block_states(tiles, events, max_level)
        queries = spine.with_columns((pl.col(SPINE_US) // hop_us).alias(HOP))
        distinct = queries.select(*keys, HOP).unique(maintain_order=True).with_row_index(QID)
        # The partial hop: events of the query's own hop with e <= t (ties included).
        partial = (
            queries.sort(SPINE_US)
            .join_asof(
                prefix.sort(EVENT_US),
                left_on=SPINE_US,
                right_on=EVENT_US,
                by=[*keys, HOP],
                strategy="backward",
                check_sortedness=False,
            )
        )
        for window, outs in group:
            hops = window.hops
            qhop = distinct[HOP].to_numpy()
            rows, levels, block_ids = dyadic_blocks(qhop - hops, qhop, max_level)
            cover = pl.DataFrame(
                {
                    QID: distinct[QID].to_numpy()[rows],
                    "__level": levels,
                    "__block": block_ids,
                    "__start": block_ids << levels,
                }
            ).join(distinct.select(QID, *keys), on=QID, how="left")
            states = [s for _, s in outs]
            merges = [e for s in states for e in s.group_merge()]
            batch = (
                cover.join(blocks, on=[*keys, "__level", "__block"], how="inner")
                .sort([QID, "__start"])
                .group_by(QID, maintain_order=True)
                .agg(merges)
            )
            cols = [c for s in states for c in s.columns]
            merged = (
                partial.select("__row", *keys, HOP, *[pl.col(c).alias(c + "__b") for c in cols])
                .join(distinct, on=[*keys, HOP], how="left", nulls_equal=True)
                .join(batch.rename({c: c + "__a" for c in cols}), on=QID, how="left")
                .select("__row", *[e for s in states for e in s.pair_merge("__a", "__b")])
            )
            result = result.join(
                merged.select("__row", *[s.finalize().alias(name) for name, s in outs]),
                on="__row",
                how="left",
            )
            if progress:
                progress(f"window {window.label}: {len(batch):,} distinct queries")
    return result
