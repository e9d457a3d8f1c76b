"""Feature views: plain views (latest value + TTL), aggregation views and on-demand views."""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, NoReturn, overload

from featurelib import dtypes
from featurelib.aggregation import AggExpr, Aggregation, Window
from featurelib.dtypes import DType
from featurelib.durations import format_duration, parse_duration
from featurelib.entity import Entity, check_name
from featurelib.errors import (
    AggregateInRowExpressionError,
    DefinitionError,
    DuplicateNameError,
    ExpressionTypeError,
    UnknownColumnError,
)
from featurelib.expr import Column, Expr, FeatureRef, Node, map_columns, walk
from featurelib.sources import BatchSource, RequestSource
from featurelib.typecheck import infer_dtype


def _as_node(value: object, *, where: str) -> Node:
    if isinstance(value, Expr):
        return value.node
    if isinstance(value, str):
        return Column(value)
    if isinstance(value, AggExpr | Aggregation):
        raise AggregateInRowExpressionError(
            f"aggregate {value!r} used as a row expression",
            where=where,
            hint="put aggregates in an fl.AggregationView with .windows(...)",
        )
    raise DefinitionError(
        f"expected an expression or column name, got {value!r}",
        where=where,
        hint="write features as fl.col('x') expressions",
    )


def _entity_keys(entities: Sequence[Entity], *, where: str) -> tuple[Entity, ...]:
    if isinstance(entities, Entity):
        entities = [entities]
    out = tuple(entities) if isinstance(entities, Sequence) else ()
    if not out or not all(isinstance(e, Entity) for e in out):
        raise DefinitionError(
            "a view needs one or more fl.Entity objects",
            where=where,
            hint="pass entities=[carrier]",
        )
    keys = [k for e in out for k in e.key_names]
    if len(set(keys)) != len(keys):
        raise DuplicateNameError(
            f"entities share join keys {keys}",
            where=where,
            hint="rename a join key, or define one entity with all the keys",
        )
    return out


def _check_source_keys(source: BatchSource, entities: tuple[Entity, ...], where: str) -> None:
    cols = source.columns
    if cols is None:
        return
    for entity in entities:
        for key, ktype in entity.join_keys:
            if key not in cols:
                raise UnknownColumnError(
                    f"join key {key!r} of entity {entity.name!r} is not a column of source "
                    f"{source.name!r}",
                    where=where,
                    hint=f"source columns are: {', '.join(sorted(cols))}",
                )
            if cols[key] != ktype:
                raise DefinitionError(
                    f"join key {key!r} is {ktype} in entity {entity.name!r} but {cols[key]} in "
                    f"source {source.name!r}",
                    where=where,
                    hint="declare the same type in both",
                )


def _semantic(spec: Any) -> Any:
    """`spec` without descriptions and tags, at every level (they do not change values)."""
    if isinstance(spec, dict):
        drop = ("description", "tags") if "kind" in spec else ()
        return {k: _semantic(v) for k, v in spec.items() if k not in drop}
    if isinstance(spec, list):
        return [_semantic(v) for v in spec]
    return spec


def _version(spec: dict[str, object]) -> str:
    text = json.dumps(_semantic(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _duplicates(names: Sequence[str]) -> list[str]:
    return sorted({n for n in names if names.count(n) > 1})


class _ViewMixin:
    """Shared behaviour of views: projections, versions, feature lookup."""

    name: str

    def __iter__(self) -> NoReturn:
        # Without this, Python would iterate a view through __getitem__(0), (1), ...
        raise TypeError(
            f"{type(self).__name__} {self.name!r} is not iterable; put it in a list: [view]"
        )

    def feature_names(self) -> list[str]:
        raise NotImplementedError

    def to_spec(self) -> dict[str, object]:
        raise NotImplementedError

    @functools.cached_property
    def version(self) -> str:
        """A hash of the definition's semantics; changes when any expression or window does."""
        return _version(self.to_spec())

    @overload
    def __getitem__(self, item: str) -> Expr: ...

    @overload
    def __getitem__(self, item: list[str]) -> Projection: ...

    def __getitem__(self, item: str | list[str]) -> Expr | Projection:
        """`view["f"]` names one feature in expressions; `view[["f", "g"]]` selects features."""
        if isinstance(item, list):
            return Projection(self, item)  # type: ignore[arg-type]
        if item not in self.feature_names():
            raise UnknownColumnError(
                f"view {self.name!r} has no feature {item!r}",
                hint=f"its features are: {', '.join(self.feature_names())}",
            )
        return Expr(FeatureRef(self.name, item))


@dataclass(frozen=True, init=False)
class FeatureView(_ViewMixin):
    """Latest value per entity of row expressions over a source, as of each time, within TTL.

    Examples:
        >>> import featurelib as fl
        >>> origin = fl.Entity("origin", {"origin": fl.String})
        >>> weather = fl.ParquetSource("weather", "data/weather.parquet")
        >>> view = fl.FeatureView(
        ...     "weather_at_origin", [origin], weather,
        ...     features={"temp": fl.col("temp"), "windy": fl.col("wind_speed") > 20},
        ...     ttl="3h",
        ... )
        >>> view.feature_names()
        ['temp', 'windy']
    """

    name: str
    entities: tuple[Entity, ...]
    source: BatchSource
    features: tuple[tuple[str, Node], ...]
    ttl: timedelta | None
    description: str
    tags: tuple[tuple[str, str], ...]

    def __init__(
        self,
        name: str,
        entities: Sequence[Entity],
        source: BatchSource,
        features: Mapping[str, Expr | str] | Sequence[str],
        *,
        ttl: str | timedelta | None = None,
        description: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        where = f"feature view {name!r}"
        check_name(name, kind="feature view", where=where)
        ents = _entity_keys(entities, where=where)
        if not isinstance(source, BatchSource):
            raise DefinitionError(
                f"source must be a batch source, got {type(source).__name__}",
                where=where,
                hint="use fl.ParquetSource, fl.CsvSource or fl.DuckDBSource",
            )
        if isinstance(features, str):  # one column: features="temp"
            features = [features]
        items = (
            list(features.items()) if isinstance(features, Mapping) else [(f, f) for f in features]
        )
        if not items:
            raise DefinitionError("no features", where=where, hint="features={'x': col('x')}")
        dupes = _duplicates([n for n, _ in items])
        if dupes:
            raise DuplicateNameError(
                f"duplicate feature names {dupes}", where=where, hint="rename one of them"
            )
        keys = {k for e in ents for k in e.key_names}
        parsed: list[tuple[str, Node]] = []
        for fname, value in items:
            check_name(fname, kind="feature", where=where)
            if fname in keys:
                raise DuplicateNameError(
                    f"feature {fname!r} has the name of a join key",
                    where=where,
                    hint=f"rename it, e.g. {fname}_value",
                )
            parsed.append((fname, _as_node(value, where=f"{where}, feature {fname!r}")))
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "entities", ents)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "features", tuple(parsed))
        object.__setattr__(self, "ttl", None if ttl is None else parse_duration(ttl, where=where))
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "tags", tuple(sorted((tags or {}).items())))
        _check_source_keys(source, ents, where)
        if source.columns is not None:
            self.feature_dtypes(source.columns)

    @property
    def join_keys(self) -> tuple[str, ...]:
        return tuple(k for e in self.entities for k in e.key_names)

    @property
    def join_key_types(self) -> dict[str, DType]:
        """Join key name -> declared type, in entity order."""
        return {k: t for e in self.entities for k, t in e.join_keys}

    def feature_names(self) -> list[str]:
        return [n for n, _ in self.features]

    def feature_dtypes(self, columns: Mapping[str, DType] | None = None) -> dict[str, DType]:
        """Feature types over the source's columns (Unknown where the schema is not known)."""
        cols = columns if columns is not None else self.source.columns
        if cols is None:
            return {n: dtypes.Unknown for n, _ in self.features}
        return {
            n: infer_dtype(node, cols, where=f"feature view {self.name!r}, feature {n!r}")
            for n, node in self.features
        }

    def to_spec(self) -> dict[str, object]:
        from featurelib.spec import node_to_spec

        return {
            "kind": "feature_view",
            "name": self.name,
            "entities": [e.to_spec() for e in self.entities],
            "source": self.source.to_spec(),
            "features": [[n, node_to_spec(node)] for n, node in self.features],
            "ttl": None if self.ttl is None else format_duration(self.ttl),
            "description": self.description,
            "tags": dict(self.tags),
        }


@dataclass(frozen=True, init=False)
class AggregationView(_ViewMixin):
    """Sawtooth-windowed aggregates of a source's events per entity.

    Examples:
        >>> import featurelib as fl
        >>> carrier = fl.Entity("carrier", {"carrier": fl.String})
        >>> flights = fl.ParquetSource("flights", "data/flights")
        >>> view = fl.AggregationView(
        ...     "carrier_stats", [carrier], flights,
        ...     [fl.mean("arr_delay").windows("1d", "7d"), fl.count().windows("1d")],
        ... )
        >>> view.feature_names()
        ['arr_delay_mean_1d', 'arr_delay_mean_7d', 'count_1d']
    """

    name: str
    entities: tuple[Entity, ...]
    source: BatchSource
    aggregations: tuple[Aggregation, ...]
    description: str
    tags: tuple[tuple[str, str], ...]

    def __init__(
        self,
        name: str,
        entities: Sequence[Entity],
        source: BatchSource,
        aggregations: Sequence[Aggregation],
        *,
        description: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        where = f"aggregation view {name!r}"
        check_name(name, kind="aggregation view", where=where)
        ents = _entity_keys(entities, where=where)
        if not isinstance(source, BatchSource):
            raise DefinitionError(
                f"source must be a batch source, got {type(source).__name__}",
                where=where,
                hint="use fl.ParquetSource, fl.CsvSource or fl.DuckDBSource",
            )
        if isinstance(aggregations, Aggregation | AggExpr):
            aggregations = [aggregations]  # type: ignore[list-item]
        aggs = tuple(aggregations)
        for agg in aggs:
            if isinstance(agg, AggExpr):
                raise DefinitionError(
                    f"aggregate {agg!r} has no windows",
                    where=where,
                    hint=f'add windows: {agg!r}.windows("1h", "1d")',
                )
            if not isinstance(agg, Aggregation):
                raise DefinitionError(
                    f"expected an aggregation, got {agg!r}",
                    where=where,
                    hint='write aggregations as fl.mean("x").windows("1h", "1d")',
                )
        if not aggs:
            raise DefinitionError(
                "no aggregations", where=where, hint='e.g. [fl.count().windows("1d")]'
            )
        names = [n for a in aggs for n in a.feature_names()]
        dupes = _duplicates(names)
        if dupes:
            raise DuplicateNameError(
                f"duplicate feature names {dupes}",
                where=where,
                hint="rename one aggregation with .windows(..., name='new_name')",
            )
        keys = {k for e in ents for k in e.key_names}
        for fname in names:
            check_name(fname, kind="feature", where=where)
            if fname in keys:
                raise DuplicateNameError(
                    f"feature {fname!r} has the name of a join key",
                    where=where,
                    hint="rename the aggregation with .windows(..., name='new_name')",
                )
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "entities", ents)
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "aggregations", aggs)
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "tags", tuple(sorted((tags or {}).items())))
        _check_source_keys(source, ents, where)
        if source.columns is not None:
            self.feature_dtypes(source.columns)

    @property
    def join_keys(self) -> tuple[str, ...]:
        return tuple(k for e in self.entities for k in e.key_names)

    @property
    def join_key_types(self) -> dict[str, DType]:
        """Join key name -> declared type, in entity order."""
        return {k: t for e in self.entities for k, t in e.join_keys}

    def feature_names(self) -> list[str]:
        return [n for a in self.aggregations for n in a.feature_names()]

    def features_with_windows(self) -> list[tuple[str, Aggregation, Window]]:
        return [(n, a, w) for a in self.aggregations for n, w in a.features()]

    def feature_dtypes(self, columns: Mapping[str, DType] | None = None) -> dict[str, DType]:
        cols = columns if columns is not None else self.source.columns
        out: dict[str, DType] = {}
        for agg in self.aggregations:
            where = f"aggregation view {self.name!r}, aggregation {agg.name!r}"
            arg = agg.fn.arg
            if arg is None:
                arg_type = dtypes.Int64
            elif cols is None:
                arg_type = dtypes.Unknown
            else:
                arg_type = infer_dtype(arg, cols, where=where)
            if agg.fn.fn in ("sum", "mean", "stddev") and arg_type not in (
                dtypes.Int64,
                dtypes.Float64,
                dtypes.Bool,
                dtypes.Unknown,
            ):
                raise ExpressionTypeError(
                    f"{agg.fn.fn}() needs numbers or booleans, got {arg_type}",
                    where=where,
                    hint="aggregate a numeric expression, or use count/last/last_n",
                )
            for fname in agg.feature_names():
                out[fname] = agg.fn.output_dtype(arg_type)
        return out

    def to_spec(self) -> dict[str, object]:
        from featurelib.spec import aggregation_to_spec

        return {
            "kind": "aggregation_view",
            "name": self.name,
            "entities": [e.to_spec() for e in self.entities],
            "source": self.source.to_spec(),
            "aggregations": [aggregation_to_spec(a) for a in self.aggregations],
            "description": self.description,
            "tags": dict(self.tags),
        }


OnDemandInput = RequestSource | FeatureView | AggregationView


@dataclass(frozen=True, init=False)
class OnDemandView(_ViewMixin):
    """Request-time features: row expressions over request fields and other views' features.

    `col("x")` names a request field or a feature of one input view; `view["x"]` names a feature
    of a specific view when the plain name is ambiguous.

    Examples:
        >>> import featurelib as fl
        >>> req = fl.RequestSource("req", {"distance": fl.Float64})
        >>> odv = fl.OnDemandView("trip", [req], {"long_haul": fl.col("distance") > 1000})
        >>> odv.feature_names()
        ['long_haul']
    """

    name: str
    inputs: tuple[OnDemandInput, ...]
    features: tuple[tuple[str, Node], ...]
    description: str
    tags: tuple[tuple[str, str], ...]

    def __init__(
        self,
        name: str,
        inputs: Sequence[OnDemandInput],
        features: Mapping[str, Expr],
        *,
        description: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        where = f"on-demand view {name!r}"
        check_name(name, kind="on-demand view", where=where)
        if isinstance(inputs, OnDemandInput):
            inputs = [inputs]
        ins = tuple(inputs)
        for item in ins:
            if not isinstance(item, RequestSource | FeatureView | AggregationView):
                raise DefinitionError(
                    f"input {item!r} is not a request source or feature view",
                    where=where,
                    hint="inputs are fl.RequestSource, fl.FeatureView or fl.AggregationView",
                )
        if not ins:
            raise DefinitionError(
                "no inputs", where=where, hint="list the request sources and views it reads"
            )
        dupes = _duplicates([i.name for i in ins])
        if dupes:
            raise DuplicateNameError(
                f"inputs share names {dupes}", where=where, hint="list each input once"
            )
        if not isinstance(features, Mapping) or not features:
            raise DefinitionError(
                "no features" if not features else "features must map names to expressions",
                where=where,
                hint="features={'long_haul': fl.col('distance') > 1000}",
            )
        parsed: list[tuple[str, Node]] = []
        for fname, value in features.items():
            check_name(fname, kind="feature", where=where)
            parsed.append((fname, _as_node(value, where=f"{where}, feature {fname!r}")))
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "inputs", ins)
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "tags", tuple(sorted((tags or {}).items())))
        object.__setattr__(self, "features", tuple(self._resolve(fname, n) for fname, n in parsed))
        self.feature_dtypes()

    def _resolve(self, fname: str, node: Node) -> tuple[str, Node]:
        """Turn plain `col("x")` references to input-view features into `FeatureRef`s."""
        where = f"on-demand view {self.name!r}, feature {fname!r}"
        owners: dict[str, list[str]] = {}
        for item in self.inputs:
            names = item.columns if isinstance(item, RequestSource) else item.feature_names()
            for n in names:
                owners.setdefault(n, []).append(item.name)
        requests = {i.name for i in self.inputs if isinstance(i, RequestSource)}
        views = {i.name: i for i in self.inputs if not isinstance(i, RequestSource)}

        def resolve(leaf: Node) -> Node:
            if isinstance(leaf, FeatureRef):
                if leaf.view not in views:
                    raise UnknownColumnError(
                        f"view {leaf.view!r} is not an input",
                        where=where,
                        hint=f"add it to the inputs; inputs are {sorted(views)}",
                    )
                return leaf
            assert isinstance(leaf, Column)
            found = owners.get(leaf.name, [])
            if not found:
                known = ", ".join(sorted(owners)) or "(none)"
                raise UnknownColumnError(
                    f"unknown column {leaf.name!r}",
                    where=where,
                    hint=f"request fields and input features are: {known}",
                )
            if len(found) > 1:
                in_views = [v for v in found if v in views]
                raise DefinitionError(
                    f"column {leaf.name!r} is ambiguous: it is in {found}",
                    where=where,
                    hint=f'write {in_views[0]}["{leaf.name}"] to name the view',
                )
            return leaf if found[0] in requests else FeatureRef(found[0], leaf.name)

        return fname, map_columns(node, resolve)

    def input_schema(self) -> dict[str, DType]:
        schema: dict[str, DType] = {}
        for item in self.inputs:
            if isinstance(item, RequestSource):
                schema.update(item.columns)
            else:
                for n, t in item.feature_dtypes().items():
                    schema[f"{item.name}.{n}"] = t
        return schema

    def request_fields(self) -> list[str]:
        used = {n.name for _, node in self.features for n in walk(node) if isinstance(n, Column)}
        return [
            f for i in self.inputs if isinstance(i, RequestSource) for f in i.columns if f in used
        ]

    def feature_names(self) -> list[str]:
        return [n for n, _ in self.features]

    def feature_dtypes(self) -> dict[str, DType]:
        schema = self.input_schema()
        return {
            n: infer_dtype(node, schema, where=f"on-demand view {self.name!r}, feature {n!r}")
            for n, node in self.features
        }

    def to_spec(self) -> dict[str, object]:
        from featurelib.spec import node_to_spec

        return {
            "kind": "on_demand_view",
            "name": self.name,
            "inputs": [i.to_spec() for i in self.inputs],
            "features": [[n, node_to_spec(node)] for n, node in self.features],
            "description": self.description,
            "tags": dict(self.tags),
        }


AnyView = FeatureView | AggregationView | OnDemandView


@dataclass(frozen=True, init=False)
class Projection:
    """A selection of a view's features, optionally renamed: `view[["a", "b"]].rename(...)`."""

    view: AnyView
    features: tuple[tuple[str, str], ...]

    def __init__(self, view: AnyView, features: Sequence[str] | None = None) -> None:
        if not isinstance(view, FeatureView | AggregationView | OnDemandView):
            raise DefinitionError(
                f"cannot select features from {view!r}",
                hint="select from a view: view[['a', 'b']]",
            )
        where = f"projection of view {view.name!r}"
        if isinstance(features, str):
            features = [features]
        names = list(features) if features is not None else view.feature_names()
        if not names:
            raise DefinitionError("no features selected", where=where, hint="view[['a', 'b']]")
        missing = [n for n in names if n not in view.feature_names()]
        if missing:
            raise UnknownColumnError(
                f"view {view.name!r} has no features {missing}",
                where=where,
                hint=f"its features are: {', '.join(view.feature_names())}",
            )
        dupes = _duplicates(names)
        if dupes:
            raise DuplicateNameError(
                f"features selected twice: {dupes}", where=where, hint="select each feature once"
            )
        object.__setattr__(self, "view", view)
        object.__setattr__(self, "features", tuple((n, n) for n in names))

    def rename(self, mapping: Mapping[str, str]) -> Projection:
        """The same selection with some output names changed: `{"feature": "new_name"}`."""
        where = f"projection of view {self.view.name!r}"
        unknown = [k for k in mapping if k not in dict(self.features)]
        if unknown:
            raise UnknownColumnError(
                f"cannot rename {unknown}: not selected from view {self.view.name!r}",
                where=where,
                hint=f"selected features are: {', '.join(n for n, _ in self.features)}",
            )
        for alias in mapping.values():
            check_name(alias, kind="output feature", where=where)
        out = Projection(self.view, [n for n, _ in self.features])
        renamed = tuple((n, mapping.get(n, alias)) for n, alias in self.features)
        object.__setattr__(out, "features", renamed)
        return out


@dataclass(frozen=True, init=False)
class FeatureService:
    """The named set of features a model uses, in output order.

    Examples:
        >>> import featurelib as fl
        >>> req = fl.RequestSource("req", {"distance": fl.Float64})
        >>> odv = fl.OnDemandView("trip", [req], {"long_haul": fl.col("distance") > 1000})
        >>> svc = fl.FeatureService("model_v1", [odv])
        >>> svc.output_names()
        ['long_haul']
    """

    name: str
    projections: tuple[Projection, ...]
    description: str
    tags: tuple[tuple[str, str], ...]

    def __init__(
        self,
        name: str,
        features: Sequence[AnyView | Projection],
        *,
        description: str = "",
        tags: Mapping[str, str] | None = None,
    ) -> None:
        where = f"feature service {name!r}"
        check_name(name, kind="feature service", where=where)
        if isinstance(features, Projection | FeatureView | AggregationView | OnDemandView):
            features = [features]
        projections = tuple(p if isinstance(p, Projection) else Projection(p) for p in features)
        if not projections:
            raise DefinitionError("no features", where=where, hint="list views or view[[...]]")
        views = [p.view.name for p in projections]
        if len(set(views)) != len(views):
            raise DuplicateNameError(
                f"view listed twice: {views}", where=where, hint="select all its features once"
            )
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "projections", projections)
        object.__setattr__(self, "description", description)
        object.__setattr__(self, "tags", tuple(sorted((tags or {}).items())))
        dupes = _duplicates(self.output_names())
        if dupes:
            raise DuplicateNameError(
                f"output feature names collide: {dupes}",
                where=where,
                hint='rename with view[["f"]].rename({"f": "new"}) or use full_feature_names',
            )

    def required_views(
        self,
    ) -> tuple[list[FeatureView | AggregationView], list[OnDemandView]]:
        """Stored views to read (on-demand inputs included) and on-demand views to evaluate,
        each once, in first-use order: what the offline engine and online reads both need."""
        stored: dict[str, FeatureView | AggregationView] = {}
        on_demand: dict[str, OnDemandView] = {}
        for proj in self.projections:
            view = proj.view
            if isinstance(view, OnDemandView):
                for item in view.inputs:
                    if isinstance(item, FeatureView | AggregationView):
                        stored.setdefault(item.name, item)
                on_demand.setdefault(view.name, view)
            else:
                stored.setdefault(view.name, view)
        return list(stored.values()), list(on_demand.values())

    def output_names(self, *, full_feature_names: bool = False) -> list[str]:
        if full_feature_names:
            return [f"{p.view.name}__{n}" for p in self.projections for n, _ in p.features]
        return [alias for p in self.projections for _, alias in p.features]

    def to_spec(self) -> dict[str, object]:
        return {
            "kind": "feature_service",
            "name": self.name,
            "projections": [
                {"view": p.view.to_spec(), "features": [list(f) for f in p.features]}
                for p in self.projections
            ],
            "description": self.description,
            "tags": dict(self.tags),
        }

    @functools.cached_property
    def version(self) -> str:
        return _version(self.to_spec())
