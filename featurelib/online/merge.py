"""Merging partial-aggregate states in Python, for the few records one online read combines.

The same states and formulas as `featurelib.offline.states` (count n; sum s; mean n, s;
min/max/last v; last_n l; stddev n, m, q merged with Chan's formula), one entity at a time.
"""

from __future__ import annotations

import math
from typing import Any

from featurelib.aggregation import AggExpr
from featurelib.offline.states import STATE_COLUMNS

State = list[Any]


def width(fn: AggExpr) -> int:
    return len(STATE_COLUMNS[fn.fn])


def merge(fn: AggExpr, a: State | None, b: State | None) -> State | None:
    """The state of events A then B (A's events are all earlier than B's)."""
    if a is None:
        return b
    if b is None:
        return a
    kind = fn.fn
    if kind == "count":
        return [(a[0] or 0) + (b[0] or 0)]
    if kind == "sum":
        return [(a[0] or 0) + (b[0] or 0)]
    if kind == "mean":
        return [(a[0] or 0) + (b[0] or 0), (a[1] or 0) + (b[1] or 0)]
    if kind in ("min", "max"):
        values = [v for v in (a[0], b[0]) if v is not None]
        if not values:
            return [None]
        return [min(values) if kind == "min" else max(values)]
    if kind == "last":
        return [b[0] if b[0] is not None else a[0]]
    if kind == "last_n":
        assert fn.k is not None
        joined = (a[0] or []) + (b[0] or [])
        return [joined[-fn.k :] or None]
    na, ma, qa = (a[0] or 0), a[1], (a[2] or 0.0)
    nb, mb, qb = (b[0] or 0), b[1], (b[2] or 0.0)
    if na == 0:
        return [nb, mb, qb]
    if nb == 0:
        return [na, ma, qa]
    n = na + nb
    delta = mb - ma
    return [n, ma + delta * nb / n, qa + qb + delta * delta * na * nb / n]


def finalize(fn: AggExpr, state: State | None) -> Any:
    """The feature value of a merged state (design §3 empty-window rules)."""
    kind = fn.fn
    if kind in ("count", "sum"):
        return 0 if state is None or state[0] is None else state[0]
    if state is None:
        return None
    if kind == "mean":
        n, s = state[0] or 0, state[1]
        return s / n if n else None
    if kind == "stddev":
        n, q = state[0] or 0, state[2] or 0.0
        return math.sqrt(max(q, 0.0) / (n - 1)) if n >= 2 else None
    if kind == "last_n":
        return state[0] or None
    return state[0]
