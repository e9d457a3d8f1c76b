"""featurelib definitions -> Feast objects (what `feast apply` registers).

| featurelib                    | Feast                                                          |
| ----------------------------- | -------------------------------------------------------------- |
| `Entity` with one join key    | `Entity(name, join_keys=[key], value_type)`                    |
| `Entity` with n > 1 keys      | n Entities `{entity}__{key}` (Feast entities have one key:     |
|                               | feast/entity.py raises "An entity may only have a single join  |
|                               | key"); a view lists all of them                                |
| Parquet source                | `FileSource`; CSV / DuckDB -> `FeaturelibSource` (sources.py)   |
| `RequestSource`               | `RequestSource` (same fields)                                  |
| `FeatureView`                 | `FeatureView` (ttl None -> timedelta(0): Feast's "no TTL")     |
| `AggregationView`             | `FeatureView` with one field per window feature, ttl 0         |
| `OnDemandView`                | `OnDemandFeatureView`, mode "python", UDF from udf.py          |
| `FeatureService`              | `FeatureService` of `view[[...]]` projections                  |

Every object carries `featurelib.kind` and `featurelib.spec` (`fl.dumps`) tags, views and services
also `featurelib.version`: the registry holds the exact definitions (registry.py reads them back)
and `feast plan` shows any change to an expression or window as a diff. Each feature's Field
description is the canonical JSON of its expression (or aggregate and window), so the `features`
diff names the changed feature too (stored views only; see `on_demand_view`). Feast computes
none of these features: featurelib's offline
store (offline_store.py) and online engine do.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import feast
from feast.data_source import DataSource
from feast.field import Field

from featurelib.dtypes import DType
from featurelib.durations import format_duration
from featurelib.entity import Entity
from featurelib.errors import DefinitionError, DuplicateNameError, SourceError
from featurelib.expr import FeatureRef, walk
from featurelib.feast.odfv import FeaturelibOnDemandFeatureView
from featurelib.feast.sources import source_tags, to_feast_source
from featurelib.feast.types import KIND, SPEC, VERSION, entity_value_type, feast_type
from featurelib.feast.udf import make_udf
from featurelib.repo import Repo
from featurelib.sources import BatchSource, RequestSource
from featurelib.spec import aggregation_to_spec, dumps, node_to_spec
from featurelib.views import AggregationView, FeatureService, FeatureView, OnDemandView

AnyView = FeatureView | AggregationView | OnDemandView


def _canonical(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def definition_tags(obj: Any) -> dict[str, str]:
    """The definition's own tags plus the featurelib kind, spec and (if any) version."""
    spec = obj.to_spec()
    tags: dict[str, str] = {str(k): str(v) for k, v in dict(getattr(obj, "tags", ())).items()}
    tags[KIND] = str(spec["kind"])
    tags[SPEC] = dumps(obj)
    if hasattr(obj, "version"):
        tags[VERSION] = str(obj.version)
    return tags


@dataclass
class FeastObjects:
    """The Feast objects of a featurelib repo, by Feast name."""

    entities: dict[str, feast.Entity] = field(default_factory=dict)
    data_sources: dict[str, DataSource] = field(default_factory=dict)
    request_sources: dict[str, feast.RequestSource] = field(default_factory=dict)
    feature_views: dict[str, feast.FeatureView] = field(default_factory=dict)
    on_demand_feature_views: dict[str, feast.OnDemandFeatureView] = field(default_factory=dict)
    feature_services: dict[str, feast.FeatureService] = field(default_factory=dict)

    def as_globals(self) -> dict[str, Any]:
        """Module globals for a Feast repo file: `{kind}__{name}` -> object (each once)."""
        out: dict[str, Any] = {}
        for kind in (
            "entities",
            "data_sources",
            "request_sources",
            "feature_views",
            "on_demand_feature_views",
            "feature_services",
        ):
            table: dict[str, Any] = getattr(self, kind)
            out.update({f"feast_{kind}__{name}": obj for name, obj in table.items()})
        return out


class Converter:
    """Converts definitions once each (shared sources and entities stay one Feast object)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.out = FeastObjects()
        self._entity_names: dict[str, Entity] = {}
        self._columns: dict[str, dict[str, DType] | None] = {}

    def convert(self, repo: Repo) -> FeastObjects:
        for obj in repo.objects():
            self.add(obj)
        return self.out

    def add(self, obj: Any) -> Any:
        if isinstance(obj, Entity):
            return self.entities(obj)
        if isinstance(obj, BatchSource):
            return self.source(obj)
        if isinstance(obj, RequestSource):
            return self.request_source(obj)
        if isinstance(obj, FeatureView | AggregationView):
            return self.view(obj)
        if isinstance(obj, OnDemandView):
            return self.on_demand_view(obj)
        if isinstance(obj, FeatureService):
            return self.service(obj)
        raise DefinitionError(f"{obj!r} is not a featurelib definition")

    # ------------------------------------------------------------------ entities and sources
    def entities(self, entity: Entity) -> list[feast.Entity]:
        where = f"entity {entity.name!r}"
        multi = len(entity.join_keys) > 1
        out = []
        for key, dtype in entity.join_keys:
            name = f"{entity.name}__{key}" if multi else entity.name
            owner = self._entity_names.setdefault(name, entity)
            if owner != entity:
                raise DuplicateNameError(
                    f"Feast entity name {name!r} is used by entities {owner.name!r} and "
                    f"{entity.name!r}",
                    where=where,
                    hint="Feast entities have one join key, so featurelib registers an entity "
                    "with several keys as '{entity}__{key}'; rename one of the entities",
                )
            if name not in self.out.entities:
                tags = definition_tags(entity)
                if multi:
                    tags["featurelib.join_key"] = key
                self.out.entities[name] = feast.Entity(
                    name=name,
                    join_keys=[key],
                    value_type=entity_value_type(dtype, where=where),
                    description=entity.description,
                    tags=tags,
                )
            out.append(self.out.entities[name])
        return out

    def source(self, source: BatchSource) -> DataSource:
        existing = self.out.data_sources.get(source.name)
        if existing is None:
            existing = self.out.data_sources[source.name] = to_feast_source(source)
        return existing

    def request_source(self, source: RequestSource) -> feast.RequestSource:
        existing = self.out.request_sources.get(source.name)
        if existing is None:
            where = f"request source {source.name!r}"
            existing = self.out.request_sources[source.name] = feast.RequestSource(
                name=source.name,
                schema=[Field(name=n, dtype=feast_type(t, where=where)) for n, t in source.schema],
                description=source.description,
                tags=source_tags(source),
            )
        return existing

    def _source_columns(self, source: BatchSource) -> dict[str, DType] | None:
        """Declared columns, else the types in the data (None when the data is missing)."""
        if source.columns is not None:
            return source.columns
        if source.name not in self._columns:
            from featurelib.offline.io import source_columns

            try:
                self._columns[source.name] = source_columns(source, self.root)
            except SourceError:
                self._columns[source.name] = None
        return self._columns[source.name]

    # ------------------------------------------------------------------ views
    def view(self, view: FeatureView | AggregationView) -> feast.FeatureView:
        existing = self.out.feature_views.get(view.name)
        if existing is not None:
            return existing
        where = f"{'feature' if isinstance(view, FeatureView) else 'aggregation'} view "
        where += repr(view.name)
        entities = [e for ent in view.entities for e in self.entities(ent)]
        key_fields = [
            Field(name=k, dtype=feast_type(t, where=where))
            for ent in view.entities
            for k, t in ent.join_keys
        ]
        dtypes = view.feature_dtypes(self._source_columns(view.source))
        descriptions = _feature_descriptions(view)
        fields = [
            Field(name=n, dtype=feast_type(t, where=f"{where}, feature {n!r}"), description=d)
            for (n, t), d in zip(dtypes.items(), descriptions, strict=True)
        ]
        ttl = view.ttl if isinstance(view, FeatureView) and view.ttl else timedelta(0)
        out = feast.FeatureView(
            name=view.name,
            source=self.source(view.source),
            schema=key_fields + fields,
            entities=entities,
            ttl=ttl,
            online=True,
            description=view.description,
            tags=definition_tags(view),
        )
        self.out.feature_views[view.name] = out
        return out

    def on_demand_view(self, view: OnDemandView) -> feast.OnDemandFeatureView:
        existing = self.out.on_demand_feature_views.get(view.name)
        if existing is not None:
            return existing
        where = f"on-demand view {view.name!r}"
        used = {n for _, node in view.features for n in walk(node)}
        sources: list[Any] = []
        for item in view.inputs:
            if isinstance(item, RequestSource):
                sources.append(self.request_source(item))
                continue
            fv = self.view(item)
            names = [n for n in item.feature_names() if FeatureRef(item.name, n) in used]
            if names:
                sources.append(fv[names])
        if not sources:  # only constant features: Feast still wants one source
            first = view.inputs[0]
            sources.append(
                self.request_source(first) if isinstance(first, RequestSource) else self.view(first)
            )
        udf, udf_string = make_udf(view)
        out = FeaturelibOnDemandFeatureView(
            name=view.name,
            sources=sources,
            # No Field descriptions here: Feast drops them when it reads an on-demand view
            # back (OnDemandFeatureView._parse_features_from_proto) but keeps them in feature
            # service projections, and then refuses the projection (with_projection). The
            # expressions show in `feast plan` through the UDF source and the spec tag.
            schema=[
                Field(name=n, dtype=feast_type(t, where=f"{where}, feature {n!r}"))
                for (n, _), t in zip(view.features, _odv_dtypes(self, view), strict=True)
            ],
            mode="python",
            udf=udf,  # type: ignore[arg-type]
            udf_string=udf_string,
            description=view.description,
            tags=definition_tags(view),
        )
        self.out.on_demand_feature_views[view.name] = out
        return out

    # ------------------------------------------------------------------ services
    def service(self, service: FeatureService) -> feast.FeatureService:
        existing = self.out.feature_services.get(service.name)
        if existing is not None:
            return existing
        features: list[Any] = []
        for proj in service.projections:
            view = proj.view
            target: Any = (
                self.on_demand_view(view) if isinstance(view, OnDemandView) else self.view(view)
            )
            names = [n for n, _ in proj.features]
            renamed = {n: a for n, a in proj.features if n != a}
            if renamed:
                warnings.warn(
                    f"feature service {service.name!r}: Feast cannot rename features "
                    f"({renamed}); Feast serves them under their own names (featurelib keeps "
                    "the renames in the service's featurelib.spec tag)",
                    stacklevel=2,
                )
            features.append(target if names == view.feature_names() else target[names])
        out = feast.FeatureService(
            name=service.name,
            features=features,
            description=service.description,
            tags=definition_tags(service),
        )
        self.out.feature_services[service.name] = out
        return out


def _feature_descriptions(view: FeatureView | AggregationView) -> list[str]:
    if isinstance(view, FeatureView):
        return [_canonical(node_to_spec(node)) for _, node in view.features]
    out = []
    for _, agg, window in view.features_with_windows():
        spec = aggregation_to_spec(agg)
        spec.pop("windows")
        spec.update(window=format_duration(window.length), hop=format_duration(window.hop))
        out.append(_canonical(spec))
    return out


def _odv_dtypes(conv: Converter, view: OnDemandView) -> list[DType]:
    """Output types, with input views typed from their data when their schema is undeclared."""
    from featurelib.typecheck import infer_dtype

    schema: dict[str, DType] = {}
    for item in view.inputs:
        if isinstance(item, RequestSource):
            schema.update(item.columns)
        else:
            columns = conv._source_columns(item.source)
            for n, t in item.feature_dtypes(columns).items():
                schema[f"{item.name}.{n}"] = t
    return [
        infer_dtype(node, schema, where=f"on-demand view {view.name!r}, feature {n!r}")
        for n, node in view.features
    ]


def to_feast(repo: Repo) -> FeastObjects:
    """The Feast objects registering every definition of `repo` (and their dependencies)."""
    return Converter(repo.root).convert(repo)
