"""Point-in-time join of plain feature views: latest visible row per entity, within TTL.

Views over the same source and keys share one pass: the source is read once with all their
features, stably sorted by (event time, created) so that source order breaks the remaining
ties, and joined to the time-sorted spine with one backward as-of join. Polars' backward as-of
join takes the *last* of several rows with equal times (pinned by a test), which is exactly the
tie rule, so no de-duplication pass is needed. TTLs are masks on the matched event time.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from featurelib.compile.polars_expr import TIMESTAMP, to_polars
from featurelib.views import FeatureView

CREATED = "__created"


@dataclass(frozen=True)
class PlainGroup:
    """Plain views reading one source with the same join keys (joined together)."""

    views: tuple[FeatureView, ...]
    keys: tuple[str, ...]

    @property
    def event_column(self) -> str:
        return f"__event__{self.views[0].name}"

    def rows(self, source: pl.LazyFrame) -> pl.LazyFrame:
        """The source's rows: keys, event time and every view's features, sorted by time."""
        first = self.views[0].source
        created = first.created_timestamp_field
        features = [
            to_polars(node).alias(f"{view.name}__{name}")
            for view in self.views
            for name, node in view.features
        ]
        keys = list(self.keys)
        frame = (
            source.select(
                *keys,
                pl.col(first.timestamp_field).alias(self.event_column),
                (pl.col(created) if created else pl.lit(None, TIMESTAMP)).alias(CREATED),
                *features,
            )
            .filter(pl.all_horizontal(pl.col(k).is_not_null() for k in keys))
            .filter(pl.col(self.event_column).is_not_null())
        )
        order = [self.event_column, CREATED] if created else [self.event_column]
        return frame.sort(order, nulls_last=False, maintain_order=True).drop(CREATED)

    def join(self, spine: pl.LazyFrame, rows: pl.LazyFrame, ts: str) -> pl.LazyFrame:
        """Attach the group's features to a spine sorted by `ts` (visible: event time <= ts)."""
        joined = spine.join_asof(
            rows,
            left_on=ts,
            right_on=self.event_column,
            by=list(self.keys),
            strategy="backward",
            check_sortedness=False,
        )
        masks = []
        for view in self.views:
            if view.ttl is None:
                continue
            # Fresh iff ts - ttl < event time <= ts: a row exactly ttl old has expired.
            fresh = pl.col(self.event_column) > pl.col(ts) - pl.lit(view.ttl)
            masks += [
                pl.when(fresh).then(pl.col(f"{view.name}__{n}")).alias(f"{view.name}__{n}")
                for n in view.feature_names()
            ]
        if masks:
            joined = joined.with_columns(masks)
        return joined.drop(self.event_column)


def group_views(views: list[FeatureView]) -> list[PlainGroup]:
    """Views grouped by (source, join keys), in first-use order."""
    groups: dict[tuple[object, tuple[str, ...]], list[FeatureView]] = {}
    for view in views:
        groups.setdefault((view.source, view.join_keys), []).append(view)
    return [PlainGroup(tuple(vs), keys) for (_, keys), vs in groups.items()]
