"""The stable JSON spec of every definition and expression, and its exact inverse.

`from_spec(obj.to_spec()) == obj` for every definition; `dumps` gives canonical text (sorted keys,
no spaces), so equal definitions have byte-equal specs and `version` hashes are stable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from featurelib.aggregation import AggExpr, Aggregation
from featurelib.dtypes import Bool, DType, Float64, Int64, String, Timestamp, Unknown
from featurelib.durations import format_duration
from featurelib.entity import Entity
from featurelib.errors import SpecError
from featurelib.expr import (
    ALL_FNS,
    ARITY,
    Call,
    Column,
    Expr,
    FeatureRef,
    Literal,
    Node,
    Scalar,
    When,
    _is_number,
    option_problem,
)
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


_HINT = "specs come from fl.dumps / to_spec(); do not edit them by hand"


def _literal_value(value: Any, dtype: DType) -> Scalar:
    """The Python value of a literal spec, checked against its type."""
    if value is None and dtype == Unknown:
        return None
    if dtype == Timestamp and isinstance(value, str):
        parsed = datetime.fromisoformat(value)
        aware = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed
        return aware.astimezone(UTC)
    if dtype == Float64 and _is_number(value) and math.isfinite(value):
        return float(value) + 0.0  # as lit(): 1 -> 1.0 and -0.0 -> 0.0
    if dtype == Int64 and isinstance(value, int) and not isinstance(value, bool):
        return value
    if (dtype == Bool and isinstance(value, bool)) or (dtype == String and isinstance(value, str)):
        return value
    raise SpecError(f"literal {value!r} is not a valid {dtype}", hint=_HINT)


def node_from_spec(spec: Mapping[str, Any]) -> Node:
    """Inverse of `node_to_spec`; a SpecError (with a hint) for anything malformed."""
    if not isinstance(spec, Mapping):
        raise SpecError(f"expression spec must be an object, got {spec!r}", hint=_HINT)
    kind = spec.get("kind")
    try:
        if kind == "col":
            return Column(_text(spec["name"]))
        if kind == "feature":
            return FeatureRef(_text(spec["view"]), _text(spec["name"]))
        if kind == "lit":
            dtype = DType.from_spec(spec["dtype"])
            return Literal(_literal_value(spec["value"], dtype), dtype)
        if kind == "call":
            fn = spec["fn"]
            if fn not in ALL_FNS:
                raise SpecError(f"unknown function {fn!r} in expression spec", hint=_HINT)
            args = tuple(node_from_spec(a) for a in spec["args"])
            if len(args) != ARITY[fn]:
                raise SpecError(f"{fn} takes {ARITY[fn]} arguments, got {len(args)}", hint=_HINT)
            raw_options = spec.get("options", {})
            if not isinstance(raw_options, Mapping) or not all(
                v is None or isinstance(v, int | float | str) for v in raw_options.values()
            ):
                raise SpecError(f"options of {fn} must be scalars: {raw_options!r}", hint=_HINT)
            options = tuple(sorted(raw_options.items()))
            problem = option_problem(fn, options)
            if problem:
                raise SpecError(problem[0], hint=problem[1])
            return Call(fn, args, options)
        if kind == "when":
            branches = tuple((node_from_spec(c), node_from_spec(v)) for c, v in spec["branches"])
            if not branches:
                raise SpecError("a when expression needs at least one branch", hint=_HINT)
            return When(branches, node_from_spec(spec["otherwise"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise SpecError(f"malformed expression spec {spec!r}: {exc!r}", hint=_HINT) from exc
    raise SpecError(
        f"unknown expression kind {kind!r}", hint="expression kinds: col, feature, lit, call, when"
    )


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {value!r}")
    return value


def aggregation_to_spec(agg: Aggregation) -> dict[str, Any]:
    return {
        "fn": agg.fn.fn,
        "arg": None if agg.fn.arg is None else node_to_spec(agg.fn.arg),
        "k": agg.fn.k,
        "name": agg.name,
        "windows": [[format_duration(w.length), format_duration(w.hop)] for w in agg.windows],
    }


def aggregation_from_spec(spec: Mapping[str, Any]) -> Aggregation:
    arg = None if spec["arg"] is None else node_from_spec(spec["arg"])
    fn = AggExpr(spec["fn"], arg, spec["k"])
    hops = {h for _, h in spec["windows"]}
    if len(hops) == 1:
        return Aggregation(fn, [w for w, _ in spec["windows"]], name=spec["name"], hop=hops.pop())
    out = Aggregation(fn, [w for w, _ in spec["windows"]], name=spec["name"])
    if [format_duration(w.hop) for w in out.windows] != [h for _, h in spec["windows"]]:
        raise SpecError(
            f"aggregation {spec['name']!r} mixes explicit hops; not supported",
            hint="give every window of one aggregation the same hop",
        )
    return out


def _views(raw: list[Any]) -> list[Any]:
    return [from_spec(v) for v in raw]


def from_spec(spec: Mapping[str, Any]) -> Any:
    """Rebuild any definition (or expression) from its spec.

    Malformed specs raise SpecError; well-formed specs of invalid definitions raise the
    DefinitionError the constructor raises (e.g. UnknownColumnError).
    """
    if not isinstance(spec, Mapping):
        raise SpecError(f"a spec must be a JSON object, got {spec!r}", hint=_HINT)
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
                projections.append(proj.rename(dict(p["features"])))
            return FeatureService(
                spec["name"],
                projections,
                description=spec.get("description", ""),
                tags=spec.get("tags") or {},
            )
        if kind in ("col", "feature", "lit", "call", "when"):
            return Expr(node_from_spec(spec))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SpecError(f"malformed {kind} spec: missing or bad {exc!r}", hint=_HINT) from exc
    raise SpecError(
        f"unknown spec kind {kind!r}",
        hint="kinds: entity, source, request_source, feature_view, aggregation_view, "
        "on_demand_view, feature_service",
    )


def dumps(obj: Any) -> str:
    """Canonical JSON text of a definition's spec."""
    spec = obj.to_spec()
    return json.dumps(
        {"spec_version": SPEC_VERSION, **spec},
        sort_keys=True,
        separators=(",", ":"),
        allow_nan=False,  # strict JSON: literals are finite (fl.lit rejects NaN and inf)
    )


def loads(text: str | bytes) -> Any:
    """Inverse of `dumps`."""
    try:
        raw = json.loads(text)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise SpecError(f"spec is not valid JSON: {exc}", hint=_HINT) from exc
    if not isinstance(raw, dict):
        raise SpecError(f"a spec must be a JSON object, got {type(raw).__name__}", hint=_HINT)
    version = raw.pop("spec_version", SPEC_VERSION)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SpecError(f"invalid spec_version {version!r}", hint=f"it is {SPEC_VERSION}")
    if version > SPEC_VERSION:
        raise SpecError(
            f"spec version {version} is newer than this featurelib ({SPEC_VERSION})",
            hint="upgrade featurelib",
        )
    return from_spec(raw)
