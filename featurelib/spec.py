"""The stable JSON spec of every definition and expression, and its exact inverse.

`from_spec(obj.to_spec()) == obj` for every definition; `dumps` gives canonical text (sorted keys,
no spaces), so equal definitions have byte-equal specs and `version` hashes are stable.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from featurelib.aggregation import AggExpr, Aggregation
from featurelib.dtypes import DType, Timestamp
from featurelib.durations import format_duration
from featurelib.entity import Entity
from featurelib.errors import SpecError
from featurelib.expr import ALL_FNS, Call, Column, Expr, FeatureRef, Literal, Node, When
from featurelib.sources import BatchSource, RequestSource
from featurelib.views import (
    AggregationView,
    FeatureService,
    FeatureView,
    OnDemandView,
    Projection,
)

SPEC_VERSION = 1


def node_to_spec(node: Node) -> dict[str, Any]:
    if isinstance(node, Column):
        return {"kind": "col", "name": node.name}
    if isinstance(node, FeatureRef):
        return {"kind": "feature", "view": node.view, "name": node.name}
    if isinstance(node, Literal):
        value = node.value.isoformat() if isinstance(node.value, datetime) else node.value
        return {"kind": "lit", "dtype": node.dtype.to_spec(), "value": value}
    if isinstance(node, Call):
        return {
            "kind": "call",
            "fn": node.fn,
            "args": [node_to_spec(a) for a in node.args],
            "options": dict(node.options),
        }
    if isinstance(node, When):
        return {
            "kind": "when",
            "branches": [[node_to_spec(c), node_to_spec(v)] for c, v in node.branches],
            "otherwise": node_to_spec(node.otherwise),
        }
    raise SpecError(f"cannot serialize expression node {node!r}")


def node_from_spec(spec: Mapping[str, Any]) -> Node:
    try:
        kind = spec["kind"]
        if kind == "col":
            return Column(spec["name"])
        if kind == "feature":
            return FeatureRef(spec["view"], spec["name"])
        if kind == "lit":
            dtype = DType.from_spec(spec["dtype"])
            value = spec["value"]
            if dtype == Timestamp and value is not None:
                value = datetime.fromisoformat(value)
            return Literal(value, dtype)
        if kind == "call":
            if spec["fn"] not in ALL_FNS:
                raise SpecError(f"unknown function {spec['fn']!r} in expression spec")
            args = tuple(node_from_spec(a) for a in spec["args"])
            return Call(spec["fn"], args, tuple(sorted(spec.get("options", {}).items())))
        if kind == "when":
            branches = tuple((node_from_spec(c), node_from_spec(v)) for c, v in spec["branches"])
            return When(branches, node_from_spec(spec["otherwise"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError(
            f"malformed expression spec {spec!r}: {exc}", hint="specs come from to_spec()"
        ) from exc
    raise SpecError(f"unknown expression kind {kind!r}", hint="specs come from to_spec()")


def aggregation_to_spec(agg: Aggregation) -> dict[str, Any]:
    return {
        "fn": agg.fn.fn,
        "arg": None if agg.fn.arg is None else node_to_spec(agg.fn.arg),
        "k": agg.fn.k,
        "name": agg.name,
        "windows": [[format_duration(w.length), format_duration(w.hop)] for w in agg.windows],
    }


def aggregation_from_spec(spec: Mapping[str, Any]) -> Aggregation:
    fn = AggExpr(spec["fn"], None if spec["arg"] is None else node_from_spec(spec["arg"]), spec["k"])
    hops = {h for _, h in spec["windows"]}
    if len(hops) == 1:
        return Aggregation(fn, [w for w, _ in spec["windows"]], name=spec["name"], hop=hops.pop())
    out = Aggregation(fn, [w for w, _ in spec["windows"]], name=spec["name"])
    if [format_duration(w.hop) for w in out.windows] != [h for _, h in spec["windows"]]:
        raise SpecError(f"aggregation {spec['name']!r} mixes explicit hops; not supported")
    return out


def _views(raw: list[Any]) -> list[Any]:
    return [from_spec(v) for v in raw]


def from_spec(spec: Mapping[str, Any]) -> Any:
    """Rebuild any definition (or expression) from its spec."""
    kind = spec.get("kind")
    try:
        if kind == "entity":
            return Entity.from_spec(spec)
        if kind == "source":
            return BatchSource.from_spec(spec)
        if kind == "request_source":
            return RequestSource.from_spec(spec)
        if kind == "feature_view":
            return FeatureView(
                spec["name"],
                _views(spec["entities"]),
                from_spec(spec["source"]),
                {n: Expr(node_from_spec(e)) for n, e in spec["features"]},
                ttl=spec["ttl"],
                description=spec.get("description", ""),
                tags=spec.get("tags") or {},
            )
        if kind == "aggregation_view":
            return AggregationView(
                spec["name"],
                _views(spec["entities"]),
                from_spec(spec["source"]),
                [aggregation_from_spec(a) for a in spec["aggregations"]],
                description=spec.get("description", ""),
                tags=spec.get("tags") or {},
            )
        if kind == "on_demand_view":
            return OnDemandView(
                spec["name"],
                _views(spec["inputs"]),
                {n: Expr(node_from_spec(e)) for n, e in spec["features"]},
                description=spec.get("description", ""),
                tags=spec.get("tags") or {},
            )
        if kind == "feature_service":
            projections = []
            for p in spec["projections"]:
                proj = Projection(from_spec(p["view"]), [n for n, _ in p["features"]])
                projections.append(proj.rename({n: a for n, a in p["features"]}))
            return FeatureService(
                spec["name"],
                projections,
                description=spec.get("description", ""),
                tags=spec.get("tags") or {},
            )
        if kind in ("col", "feature", "lit", "call", "when"):
            return Expr(node_from_spec(spec))
    except (KeyError, TypeError) as exc:
        raise SpecError(f"malformed {kind} spec: missing or bad {exc}") from exc
    raise SpecError(
        f"unknown spec kind {kind!r}",
        hint="kinds: entity, source, request_source, feature_view, aggregation_view, "
        "on_demand_view, feature_service",
    )


def dumps(obj: Any) -> str:
    """Canonical JSON text of a definition's spec."""
    spec = obj.to_spec()
    return json.dumps({"spec_version": SPEC_VERSION, **spec}, sort_keys=True, separators=(",", ":"))


def loads(text: str) -> Any:
    """Inverse of `dumps`."""
    raw = json.loads(text)
    version = raw.pop("spec_version", SPEC_VERSION)
    if version > SPEC_VERSION:
        raise SpecError(
            f"spec version {version} is newer than this featurelib ({SPEC_VERSION})",
            hint="upgrade featurelib",
        )
    return from_spec(raw)
