"""REST transport (ASGI, Starlette; served by uvicorn): Open Inference Protocol v2, Feast's
feature endpoints, Prometheus metrics.

| method | path | role | answer |
|---|---|---|---|
| GET | `/v2` | - | server metadata |
| GET | `/v2/health/live`, `/v2/health/ready` | - | `{"live"/"ready": bool}` (503 when not ready) |
| GET | `/v2/models/{m}[/versions/{v}]` | score | model metadata (inputs, `predict` output) |
| GET | `/v2/models/{m}[/versions/{v}]/ready` | score | `{"name", "ready"}` (503 when not ready) |
| POST | `/v2/models/{m}[/versions/{v}]/infer` | score | OIP inference (`pd` content type) |
| POST | `/get-online-features` | score | Feast's response shape |
| POST | `/push` | push | summary of the push |
| GET | `/metrics` | admin | Prometheus text format |
| POST | `/admin/reload` | admin | reload the model snapshot now |

Infer request: `{"id": "...", "parameters": {"content_type": "pd"}, "inputs": [{"name":
"carrier", "datatype": "BYTES", "shape": [n], "data": ["UA", ...]}, ...]}` (one input per
column; `data` flat or nested as `[[...]]`). Response: `{"model_name", "model_version", "id",
"parameters": {"content_type": "pd", "route": ...}, "outputs": [{"name": "predict", "datatype":
"FP64", "shape": [n], "data": [...]}]}`, also the `X-Model-Version` response header. Request
header `X-Model-Version: <version or alias>` overrides routing; a version in the path pins it.

Errors: `{"error": "<what, where, hint>"}` with the error's status (400 bad input naming the
field, 401/403 auth, 404 unknown model/version/feature, 413 body over `max_body_bytes`, 503 store
or model unavailable, 500 otherwise, never a stack trace). Blocking work runs in worker threads
(`anyio.to_thread`), never on the event loop.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import anyio
import polars as pl
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import featurelib
from featurelib.errors import FeaturelibError
from serving.auth import Authenticator
from serving.core import ScoreResult, ScoringCore
from serving.errors import (
    BadRequestError,
    FeatureStoreUnavailableError,
    PayloadTooLargeError,
    ServingError,
)

log = logging.getLogger("featurelib.serve")
TRANSPORT = "rest"
OVERRIDE_HEADER = "x-model-version"
SERVER_NAME = "featurelib"
EXTENSIONS = ["feast_online_features", "feast_push", "metrics", "model_version_header"]
Handler = Callable[[Request], Awaitable[tuple[Response, str, str]]]

_POLARS_TYPES: dict[str, pl.DataType] = {
    "BOOL": pl.Boolean(),
    "INT8": pl.Int64(),
    "INT16": pl.Int64(),
    "INT32": pl.Int64(),
    "INT64": pl.Int64(),
    "UINT8": pl.Int64(),
    "UINT16": pl.Int64(),
    "UINT32": pl.Int64(),
    "UINT64": pl.UInt64(),
    "FP16": pl.Float64(),
    "FP32": pl.Float64(),
    "FP64": pl.Float64(),
    "BYTES": pl.String(),
}


def error_status(exc: Exception) -> int:
    """The HTTP status of an error (a featurelib error that is not a serving one: 400)."""
    if isinstance(exc, ServingError):
        return exc.status
    return 400 if isinstance(exc, FeaturelibError) else 500


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequestError(f"the body is not valid JSON: {exc}") from None


def feature_time_parameter(parameters: Any) -> datetime | None:
    """The replay-mode `feature_time` parameter (ISO 8601; naive = UTC), if given."""
    text = parameters.get("feature_time") if isinstance(parameters, dict) else None
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(str(text))
    except ValueError:
        raise BadRequestError(
            f"parameters.feature_time {text!r} is not an ISO 8601 time",
            where="infer request",
            hint="e.g. 2013-12-31T10:00:00Z",
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def decode_inputs(body: Any) -> tuple[pl.DataFrame, str | None]:
    """OIP JSON inputs (`pd` content type: one named column per input) as a frame, and the
    request id."""
    if not isinstance(body, dict):
        raise BadRequestError("the request body must be a JSON object", where="infer request")
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequestError(
            "'parameters' must be an object",
            where="infer request",
            hint='e.g. {"content_type": "pd"}',
        )
    content_type = parameters.get("content_type", "pd")
    if content_type != "pd":
        raise BadRequestError(
            f"content_type {content_type!r} is not supported",
            where="infer request: parameters",
            hint='send named columns with "content_type": "pd" (or leave it out)',
        )
    inputs = body.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadRequestError(
            "'inputs' must be a non-empty list of tensors",
            where="infer request",
            hint='e.g. "inputs": [{"name": "carrier", "datatype": "BYTES", "shape": [1], '
            '"data": ["UA"]}]',
        )
    columns: dict[str, pl.Series] = {}
    for position, tensor in enumerate(inputs):
        series = _decode_tensor(tensor, position)
        if series.name in columns:
            raise BadRequestError(f"input {series.name!r} is given twice", where="infer request")
        columns[series.name] = series
    lengths = {name: s.len() for name, s in columns.items()}
    if len(set(lengths.values())) > 1:
        raise BadRequestError(
            f"inputs have different numbers of rows: {lengths}",
            where="infer request",
            hint="every input column needs one value per row",
        )
    request_id = body.get("id")
    return pl.DataFrame(list(columns.values())), None if request_id is None else str(request_id)


def _decode_tensor(tensor: Any, position: int) -> pl.Series:
    where = f"infer request: inputs[{position}]"
    if not isinstance(tensor, dict) or not isinstance(tensor.get("name"), str):
        raise BadRequestError("each input needs a 'name' (string)", where=where)
    name = tensor["name"]
    where = f"infer request: input {name!r}"
    datatype = tensor.get("datatype")
    if not isinstance(datatype, str) or datatype not in _POLARS_TYPES:
        raise BadRequestError(
            f"datatype {datatype!r} is not supported",
            where=where,
            hint=f"use one of {sorted(_POLARS_TYPES)}",
        )
    data = tensor.get("data")
    if not isinstance(data, list):
        raise BadRequestError("'data' must be a list of values", where=where)
    if data and isinstance(data[0], list):  # nested as [[...], ...] (shape [n, 1])
        data = [v for row in data for v in (row if isinstance(row, list) else [row])]
    shape = tensor.get("shape")
    if (
        not isinstance(shape, list)
        or not all(isinstance(d, int) and d >= 0 for d in shape)
        or _product(shape) != len(data)
    ):
        raise BadRequestError(
            f"shape {shape!r} does not match the {len(data)} values in 'data'",
            where=where,
            hint=f"send one column per input: shape [{len(data)}]",
        )
    try:
        return pl.Series(name, data, dtype=_POLARS_TYPES[datatype], strict=True)
    except (TypeError, ValueError, OverflowError, pl.exceptions.PolarsError) as exc:
        detail = str(exc).splitlines()[0].split(";")[-1].strip()
        raise BadRequestError(
            f"values do not match datatype {datatype}: {detail}",
            where=where,
            hint="BYTES inputs hold strings, FP*/INT* numbers, BOOL true/false",
        ) from None


def _product(shape: list[int]) -> int:
    out = 1
    for dim in shape:
        out *= dim
    return out


def infer_response(result: ScoreResult) -> dict[str, Any]:
    parameters: dict[str, Any] = {"content_type": "pd", "route": result.route}
    if result.degraded:
        parameters["degraded"] = "store_unavailable"
    return {
        "model_name": result.model,
        "model_version": str(result.model_version),
        "id": result.request_id,
        "parameters": parameters,
        "outputs": [
            {
                "name": "predict",
                "datatype": "FP64",
                "shape": [len(result.predictions)],
                "data": result.predictions.tolist(),
            }
        ],
    }


def create_app(core: ScoringCore, auth: Authenticator) -> Starlette:
    """The ASGI app serving `core` (see the module docstring)."""
    config = core.config
    metrics = core.metrics
    backstop = config.deadline_s * 3 + 2.0  # socket timeouts normally answer long before

    async def blocking(fn: Callable[[], Any], *, deadline: bool = True) -> Any:
        if not deadline:
            return await anyio.to_thread.run_sync(fn)
        with anyio.move_on_after(backstop) as scope:
            return await anyio.to_thread.run_sync(fn, abandon_on_cancel=True)
        if scope.cancelled_caught:
            raise FeatureStoreUnavailableError(
                f"the request did not finish within {backstop:g}s", hint="retry later"
            )
        return None

    async def read_body(request: Request) -> bytes:
        limit = config.max_body_bytes
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > limit:
            raise PayloadTooLargeError(
                f"request body of {declared} bytes exceeds the limit of {limit} bytes",
                hint="send fewer rows per request (or raise max_body_bytes)",
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLargeError(
                    f"request body exceeds the limit of {limit} bytes",
                    hint="send fewer rows per request (or raise max_body_bytes)",
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def endpoint(name: str, role: str | None, handler: Handler) -> Callable[..., Any]:
        async def run(request: Request) -> Response:
            started = time.perf_counter()
            status, model, version = 500, "", ""
            metrics.in_flight.labels(TRANSPORT).inc()
            try:
                if role is not None:
                    auth.check(request.headers.get("authorization"), role)
                response, model, version = await handler(request)
                status = response.status_code
                return response
            except Exception as exc:
                status = error_status(exc)
                if status == 500:
                    log.exception("%s failed", name)
                    message = f"internal error in {name}: {type(exc).__name__}: {exc}"
                else:
                    message = str(exc)
                # Only served models become metric labels: names from unauthenticated or bad
                # requests would create unbounded series.
                named = request.path_params.get("name", "")
                model = model or (named if named in core.catalog.snapshot.models else "")
                return JSONResponse({"error": message}, status_code=status)
            finally:
                metrics.in_flight.labels(TRANSPORT).dec()
                metrics.observe_request(
                    TRANSPORT, name, time.perf_counter() - started, status, model, version
                )

        return run

    async def server_metadata(_: Request) -> tuple[Response, str, str]:
        body = {"name": SERVER_NAME, "version": featurelib.__version__, "extensions": EXTENSIONS}
        return JSONResponse(body), "", ""

    async def live(_: Request) -> tuple[Response, str, str]:
        return JSONResponse({"live": True}), "", ""

    async def ready(_: Request) -> tuple[Response, str, str]:
        ok, reason = core.ready()
        return JSONResponse({"ready": ok, "reason": reason}, 200 if ok else 503), "", ""

    async def model_metadata(request: Request) -> tuple[Response, str, str]:
        name, version = request.path_params["name"], request.path_params.get("version")
        body = await blocking(lambda: core.metadata(name, version))
        return JSONResponse(body), name, body["parameters"]["version"]

    async def model_ready(request: Request) -> tuple[Response, str, str]:
        name, version = request.path_params["name"], request.path_params.get("version")
        ok = await blocking(lambda: core.model_ready(name, version))
        return JSONResponse({"name": name, "ready": ok}, 200 if ok else 503), name, version or ""

    async def infer(request: Request) -> tuple[Response, str, str]:
        name, version = request.path_params["name"], request.path_params.get("version")
        raw = await read_body(request)
        override = request.headers.get(OVERRIDE_HEADER)
        header_id = request.headers.get("x-request-id")

        def work() -> tuple[Response, str]:  # parsing, scoring and rendering off the loop
            body = parse_json(raw)
            frame, request_id = decode_inputs(body)
            result = core.infer(
                name,
                frame,
                version=version,
                route_override=override,
                request_id=request_id or header_id,
                feature_time=feature_time_parameter(body.get("parameters") or {}),
            )
            answered = str(result.model_version)
            headers = {"X-Model-Version": answered}
            return JSONResponse(infer_response(result), headers=headers), answered

        response, answered = await blocking(work)
        return response, name, answered

    async def online_features(request: Request) -> tuple[Response, str, str]:
        raw = await read_body(request)

        def work() -> Response:
            body = parse_json(raw)
            if not isinstance(body, dict) or not isinstance(body.get("entities"), dict):
                raise BadRequestError(
                    "the body needs 'entities': {join key: [values]}",
                    where="get-online-features",
                    hint='e.g. {"feature_service": "flight_delay", "entities": {"carrier": '
                    '["UA"]}}',
                )
            features = body.get("features") or []
            context = body.get("request_context") or {}
            if not isinstance(features, list) or not isinstance(context, dict):
                raise BadRequestError(
                    "'features' must be a list and 'request_context' an object",
                    where="get-online-features",
                )
            answer = core.online_features(
                body.get("feature_service"),
                body["entities"],
                context,
                bool(body.get("full_feature_names", False)),
                features=features,
            )
            return JSONResponse(answer)

        return await blocking(work), "", ""

    async def push(request: Request) -> tuple[Response, str, str]:
        from serving.feast_api import rows_from_columns

        raw = await read_body(request)

        def work() -> Response:
            body = parse_json(raw)
            if (
                not isinstance(body, dict)
                or not isinstance(body.get("push_source_name"), str)
                or not isinstance(body.get("df"), dict)
            ):
                raise BadRequestError(
                    "the body needs 'push_source_name' (string) and 'df' ({column: [values]})",
                    where="push",
                )
            rows = rows_from_columns(body["df"])
            # Feast defaults to "online"; featurelib logs pushes for training too unless told
            # otherwise, so that online and offline values stay equal.
            source, to = body["push_source_name"], str(body.get("to", "online_and_offline"))
            return JSONResponse(core.push(source, rows, to))

        return await blocking(work, deadline=False), "", ""

    async def render_metrics(_: Request) -> tuple[Response, str, str]:
        text = await blocking(metrics.render, deadline=False)
        return Response(text, media_type=metrics.content_type), "", ""

    async def reload(_: Request) -> tuple[Response, str, str]:
        swapped = await blocking(lambda: core.catalog.refresh(force=True), deadline=False)
        snapshot = core.catalog.snapshot
        models = {
            name: {"aliases": dict(m.aliases), "ready": m.ready, "problem": m.problem}
            for name, m in snapshot.models.items()
        }
        body = {"reloaded": swapped, "counter": snapshot.counter, "models": models}
        return JSONResponse(body), "", ""

    model_paths = ("/v2/models/{name}", "/v2/models/{name}/versions/{version}")
    routes = [
        Route("/v2", endpoint("server_metadata", None, server_metadata), methods=["GET"]),
        Route("/v2/health/live", endpoint("live", None, live), methods=["GET"]),
        Route("/v2/health/ready", endpoint("ready", None, ready), methods=["GET"]),
        Route("/get-online-features", endpoint("get_online_features", "score", online_features),
              methods=["POST"]),
        Route("/push", endpoint("push", "push", push), methods=["POST"]),
        Route("/metrics", endpoint("metrics", "admin", render_metrics), methods=["GET"]),
        Route("/admin/reload", endpoint("admin_reload", "admin", reload), methods=["POST"]),
    ]  # fmt: skip
    for path in model_paths:
        routes += [
            Route(path, endpoint("model_metadata", "score", model_metadata), methods=["GET"]),
            Route(f"{path}/ready", endpoint("model_ready", "score", model_ready), methods=["GET"]),
            Route(f"{path}/infer", endpoint("infer", "score", infer), methods=["POST"]),
        ]
    app = Starlette(routes=routes)
    app.add_exception_handler(404, _not_found)
    app.add_exception_handler(405, _not_allowed)
    return app


async def _not_found(request: Request, _: Exception) -> Response:
    return JSONResponse({"error": f"no endpoint at {request.url.path}"}, status_code=404)


async def _not_allowed(request: Request, _: Exception) -> Response:
    return JSONResponse(
        {"error": f"{request.method} is not allowed on {request.url.path}"}, status_code=405
    )
