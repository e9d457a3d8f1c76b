"""Partial-aggregate states of each aggregate function, as Polars expressions.

A state summarizes a set of events so that states of disjoint, time-ordered sets merge exactly:
count -> n; sum -> s; mean -> (n, s); min/max/last -> v; stddev -> (n, m, q) with q the sum of
squared deviations from the mean m (merged with Chan's formula, so no catastrophic cancellation);
last_n -> l, the list of the k most recent non-null values. Every state has three forms:
a single event's state, group merge (many time-ordered states -> one), and pair merge (an
earlier state A with a later state B). The same states back the online tiles.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from featurelib.aggregation import AggExpr

STATE_COLUMNS = {
    "count": ("n",),
    "sum": ("s",),
    "mean": ("n", "s"),
    "min": ("v",),
    "max": ("v",),
    "stddev": ("n", "m", "q"),
    "last": ("v",),
    "last_n": ("l",),
}


@dataclass(frozen=True)
class State:
    """The state columns of one aggregate (prefixed `a{i}_`) and how to build and merge them."""

    fn: AggExpr
    prefix: str
    arg_dtype: pl.DataType

    def col(self, part: str, suffix: str = "") -> pl.Expr:
        return pl.col(f"{self.prefix}_{part}{suffix}")

    def name(self, part: str) -> str:
        return f"{self.prefix}_{part}"

    @property
    def columns(self) -> list[str]:
        return [self.name(p) for p in STATE_COLUMNS[self.fn.fn]]

    @property
    def sum_dtype(self) -> pl.DataType:
        return pl.Float64() if self.arg_dtype.is_float() else pl.Int64()

    def event_exprs(self, x: pl.Expr) -> list[pl.Expr]:
        """The state of a single event whose argument value is `x` (null when missing)."""
        fn = self.fn.fn
        present = x.is_not_null().cast(pl.Int64)
        if fn == "count":
            # count() counts rows: its argument column is a constant 1, never null.
            return [present.alias(self.name("n"))]
        if fn in ("sum", "mean"):
            out = [x.cast(self.sum_dtype).alias(self.name("s"))]
            if fn == "mean":
                out.append(present.alias(self.name("n")))
            return out
        if fn in ("min", "max", "last"):
            return [x.alias(self.name("v"))]
        if fn == "last_n":
            return [pl.when(x.is_not_null()).then(pl.concat_list(x)).alias(self.name("l"))]
        return [
            present.alias(self.name("n")),
            x.cast(pl.Float64).alias(self.name("m")),
            pl.lit(0.0, pl.Float64).alias(self.name("q")),
        ]

    def group_merge(self) -> list[pl.Expr]:
        """Aggregations merging the states of each group (rows in time order)."""
        fn = self.fn.fn
        if fn == "count":
            return [self.col("n").sum().alias(self.name("n"))]
        if fn == "sum":
            return [self.col("s").sum().alias(self.name("s"))]
        if fn == "mean":
            return [
                self.col("n").sum().alias(self.name("n")),
                self.col("s").sum().alias(self.name("s")),
            ]
        if fn == "min":
            return [self.col("v").min().alias(self.name("v"))]
        if fn == "max":
            return [self.col("v").max().alias(self.name("v"))]
        if fn == "last":
            return [self.col("v").last(ignore_nulls=True).alias(self.name("v"))]
        if fn == "last_n":
            assert self.fn.k is not None
            merged = self.col("l").explode().drop_nulls().tail(self.fn.k)
            return [merged.alias(self.name("l"))]
        n, m, q = self.col("n"), self.col("m"), self.col("q")
        total = n.sum()
        mean = (n * m).sum() / total
        spread = (q.fill_null(0.0) + n * (m - mean) ** 2).sum()
        return [
            total.alias(self.name("n")),
            pl.when(total > 0).then(mean).alias(self.name("m")),
            pl.when(total > 0).then(spread).otherwise(0.0).alias(self.name("q")),
        ]

    def pair_merge(self, a: str, b: str) -> list[pl.Expr]:
        """Merge the state with column suffix `a` (earlier events) and `b` (later events)."""
        fn = self.fn.fn

        def both(part: str) -> tuple[pl.Expr, pl.Expr]:
            return self.col(part, a), self.col(part, b)

        if fn == "count":
            na, nb = both("n")
            return [(na.fill_null(0) + nb.fill_null(0)).alias(self.name("n"))]
        if fn in ("sum", "mean"):
            sa, sb = both("s")
            out = [(sa.fill_null(0) + sb.fill_null(0)).alias(self.name("s"))]
            if fn == "mean":
                na, nb = both("n")
                out.append((na.fill_null(0) + nb.fill_null(0)).alias(self.name("n")))
            return out
        if fn in ("min", "max"):
            va, vb = both("v")
            merged = pl.min_horizontal(va, vb) if fn == "min" else pl.max_horizontal(va, vb)
            return [merged.alias(self.name("v"))]
        if fn == "last":
            va, vb = both("v")
            return [pl.coalesce(vb, va).alias(self.name("v"))]
        if fn == "last_n":
            la, lb = both("l")
            assert self.fn.k is not None
            joined = (
                pl.when(la.is_null())
                .then(lb)
                .when(lb.is_null())
                .then(la)
                .otherwise(pl.concat_list(la, lb))
                .list.tail(self.fn.k)
            )
            return [joined.alias(self.name("l"))]
        na, nb = (c.fill_null(0) for c in both("n"))
        ma, mb = both("m")
        qa, qb = (c.fill_null(0.0) for c in both("q"))
        n = na + nb
        delta = mb - ma
        mean = pl.when(na == 0).then(mb).when(nb == 0).then(ma).otherwise(ma + delta * nb / n)
        q = (
            pl.when(na == 0)
            .then(qb)
            .when(nb == 0)
            .then(qa)
            .otherwise(qa + qb + delta * delta * na * nb / n)
        )
        return [n.alias(self.name("n")), mean.alias(self.name("m")), q.alias(self.name("q"))]

    def finalize(self) -> pl.Expr:
        """The feature value from the merged state (design §3 empty-window rules)."""
        fn = self.fn.fn
        if fn == "count":
            return self.col("n").fill_null(0)
        if fn == "sum":
            return self.col("s").fill_null(0).cast(self.sum_dtype)
        if fn == "mean":
            n = self.col("n").fill_null(0)
            return pl.when(n > 0).then(self.col("s").cast(pl.Float64) / n)
        if fn == "stddev":
            n = self.col("n").fill_null(0)
            var = self.col("q") / (n - 1)
            return pl.when(n >= 2).then(var.clip(0.0, None).sqrt())
        if fn == "last_n":
            return pl.when(self.col("l").list.len() > 0).then(self.col("l"))
        return self.col("v")
