"""Tiles and aligned blocks of an aggregation view, computed with Polars for online writes.

For every hop size used by the view's windows: tiles (level 0: one hop) and blocks of 2^L hops
aligned on absolute hop numbers, up to the level the longest window with that hop needs. Each
row carries the partial-aggregate states (`featurelib.offline.states`) of the aggregations that
use that hop size, in the order `hop_states` gives.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from featurelib.durations import to_micros
from featurelib.offline.states import State
from featurelib.views import AggregationView

HOP = "__hop"
EVENT_US = "__e_us"
LEVEL = "__level"
BLOCK = "__block"


@dataclass(frozen=True)
class HopPlan:
    """What is stored for one hop size: the aggregations using it and the deepest level."""

    hop_us: int
    aggregations: tuple[int, ...]  # indexes into view.aggregations
    max_level: int
    longest_window_hops: int


def hop_plans(view: AggregationView) -> list[HopPlan]:
    plans: dict[int, tuple[list[int], int]] = {}
    for i, agg in enumerate(view.aggregations):
        for window in agg.windows:
            hop = to_micros(window.hop)
            aggs, longest = plans.get(hop, ([], 0))
            if i not in aggs:
                aggs.append(i)
            plans[hop] = (aggs, max(longest, window.hops))
    return [
        HopPlan(hop, tuple(aggs), max(longest.bit_length() - 1, 0), longest)
        for hop, (aggs, longest) in sorted(plans.items())
    ]


def block_frames(
    events: pl.DataFrame, keys: list[str], states: list[State], plan: HopPlan
) -> pl.DataFrame:
    """keys, level, block + state columns, for tiles and every block level of one hop size.

    `events` holds keys, `__e_us` and one state-argument column per aggregation (`a{i}_x`),
    sorted by (keys, event time, created, source order).
    """
    used = [s for s in states if int(s.prefix[1:]) in plan.aggregations]
    cols = [c for s in used for c in s.columns]
    merges = [e for s in used for e in s.group_merge()]
    event_states = events.select(
        *keys,
        (pl.col(EVENT_US) // plan.hop_us).alias(HOP),
        *[e for s in used for e in s.event_exprs(pl.col(f"{s.prefix}_x"))],
    )
    tiles = event_states.group_by([*keys, HOP], maintain_order=True).agg(merges)
    out = [tiles.select(*keys, pl.lit(0, pl.Int64).alias(LEVEL), pl.col(HOP).alias(BLOCK), *cols)]
    current = tiles.rename({HOP: BLOCK}).sort([*keys, BLOCK])
    for level in range(1, plan.max_level + 1):
        current = (
            current.with_columns(pl.col(BLOCK) // 2)
            .group_by([*keys, BLOCK], maintain_order=True)
            .agg(merges)
        )
        out.append(current.select(*keys, pl.lit(level, pl.Int64).alias(LEVEL), BLOCK, *cols))
    return pl.concat(out, how="vertical_relaxed")
