"""gRPC transport: `inference.GRPCInferenceService` (Open Inference Protocol v2) on the core.

Inputs are named columns (`pd` convention) as in REST: each `InferInputTensor` carries its
values in the `InferTensorContents` field of its datatype (`bytes_contents` for BYTES, UTF-8;
`fp64_contents`, `fp32_contents`, `int64_contents`, `int_contents` (INT8/16/32),
`uint_contents` (UINT8/16/32), `uint64_contents`, `bool_contents`), or all inputs in
`raw_input_contents` (little-endian fixed-size values; BYTES as 4-byte little-endian length +
bytes per element, the Triton/KServe convention). The answer has one output, `predict` (FP64,
`fp64_contents`), `model_version` set, and `parameters["route"]`.

Metadata: `authorization: Bearer <token>` (roles as REST), `x-model-version` (routing
override, as the REST header). Errors abort the call with the error's gRPC status code
(INVALID_ARGUMENT naming the field, NOT_FOUND, UNAUTHENTICATED, PERMISSION_DENIED,
RESOURCE_EXHAUSTED for messages over `max_body_bytes`, UNAVAILABLE when the store is down) and
the same message as REST. The server runs handlers in a thread pool (`ServeConfig.threads`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
import numpy as np
import polars as pl

import featurelib
from serving.auth import Authenticator
from serving.core import ScoringCore
from serving.errors import BadRequestError, ServingError
from serving.proto import grpc_predict_v2_pb2 as pb
from serving.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from serving.rest import EXTENSIONS, SERVER_NAME, error_status, feature_time_parameter

log = logging.getLogger("featurelib.serve")
TRANSPORT = "grpc"
T = TypeVar("T")

# datatype -> (contents field, raw numpy dtype, polars type)
_TYPES: dict[str, tuple[str, str | None, pl.DataType]] = {
    "BOOL": ("bool_contents", "?", pl.Boolean()),
    "INT8": ("int_contents", "<i1", pl.Int64()),
    "INT16": ("int_contents", "<i2", pl.Int64()),
    "INT32": ("int_contents", "<i4", pl.Int64()),
    "INT64": ("int64_contents", "<i8", pl.Int64()),
    "UINT8": ("uint_contents", "<u1", pl.Int64()),
    "UINT16": ("uint_contents", "<u2", pl.Int64()),
    "UINT32": ("uint_contents", "<u4", pl.Int64()),
    "UINT64": ("uint64_contents", "<u8", pl.UInt64()),
    "FP32": ("fp32_contents", "<f4", pl.Float64()),
    "FP64": ("fp64_contents", "<f8", pl.Float64()),
    "BYTES": ("bytes_contents", None, pl.String()),
}
_CODES = {code.name: code for code in grpc.StatusCode}


def decode_request(request: Any) -> pl.DataFrame:
    """The named input columns of a `ModelInferRequest` as a frame."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise BadRequestError(
            f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs",
            where="ModelInfer request",
            hint="send one raw_input_contents entry per input, in the order of inputs",
        )
    if not request.inputs:
        raise BadRequestError("the request has no inputs", where="ModelInfer request")
    columns: dict[str, pl.Series] = {}
    for i, tensor in enumerate(request.inputs):
        where = f"ModelInfer request: input {tensor.name!r}"
        if tensor.datatype not in _TYPES:
            raise BadRequestError(
                f"datatype {tensor.datatype!r} is not supported",
                where=where,
                hint=f"use one of {sorted(_TYPES)}",
            )
        values = _raw_values(raw[i], tensor.datatype, where) if raw else _values(tensor, where)
        expected = int(np.prod(list(tensor.shape))) if len(tensor.shape) else len(values)
        if expected != len(values):
            raise BadRequestError(
                f"shape {list(tensor.shape)} does not match the {len(values)} values sent",
                where=where,
                hint=f"send one column per input: shape [{len(values)}]",
            )
        if tensor.name in columns:
            raise BadRequestError("input given twice", where=where)
        columns[tensor.name] = pl.Series(tensor.name, values, dtype=_TYPES[tensor.datatype][2])
    lengths = {name: s.len() for name, s in columns.items()}
    if len(set(lengths.values())) > 1:
        raise BadRequestError(
            f"inputs have different numbers of rows: {lengths}", where="ModelInfer request"
        )
    return pl.DataFrame(list(columns.values()))


def _values(tensor: Any, where: str) -> list[Any]:
    field = _TYPES[tensor.datatype][0]
    values = list(getattr(tensor.contents, field))
    filled = [f for f, _ in tensor.contents.ListFields()]
    if not values and filled:
        raise BadRequestError(
            f"datatype {tensor.datatype} expects its values in contents.{field}, "
            f"got {', '.join(f.name for f in filled)}",
            where=where,
        )
    if tensor.datatype == "BYTES":
        return _utf8(values, where)
    return values


def _utf8(values: list[bytes], where: str) -> list[str]:
    try:
        return [v.decode("utf-8") for v in values]
    except UnicodeDecodeError:
        raise BadRequestError("BYTES values must be UTF-8 text", where=where) from None


def _raw_values(data: bytes, datatype: str, where: str) -> list[Any]:
    dtype = _TYPES[datatype][1]
    if dtype is not None:
        size = np.dtype(dtype).itemsize
        if len(data) % size:
            raise BadRequestError(
                f"{len(data)} raw bytes are not a whole number of {datatype} values", where=where
            )
        return list(np.frombuffer(data, dtype=dtype).tolist())
    out: list[bytes] = []
    offset = 0
    while offset < len(data):
        if offset + 4 > len(data):
            raise BadRequestError("truncated BYTES length prefix in raw contents", where=where)
        length = int.from_bytes(data[offset : offset + 4], "little")
        out.append(data[offset + 4 : offset + 4 + length])
        offset += 4 + length
    if offset != len(data):
        raise BadRequestError("truncated BYTES element in raw contents", where=where)
    return _utf8(out, where)


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """`inference.GRPCInferenceService` on a `ScoringCore`."""

    def __init__(self, core: ScoringCore, auth: Authenticator) -> None:
        self.core = core
        self.auth = auth
        self.metrics = core.metrics

    def _call(
        self, context: Any, name: str, role: str | None, work: Callable[[], tuple[T, str, str]]
    ) -> T:
        started = time.perf_counter()
        status, model, version = 200, "", ""
        self.metrics.in_flight.labels(TRANSPORT).inc()
        try:
            if role is not None:
                self.auth.check(self._metadata(context).get("authorization"), role)
            result, model, version = work()
            return result
        except Exception as exc:
            status = error_status(exc)
            code = (
                exc.grpc_code
                if isinstance(exc, ServingError)
                else ("INVALID_ARGUMENT" if status == 400 else "INTERNAL")
            )
            if status == 500:
                log.exception("%s failed", name)
            message = str(exc) if status != 500 else f"internal error in {name}: {exc}"
            context.abort(_CODES[code], message)
            raise  # abort raises; this is never reached
        finally:
            self.metrics.in_flight.labels(TRANSPORT).dec()
            self.metrics.observe_request(
                TRANSPORT, name, time.perf_counter() - started, status, model, version
            )

    @staticmethod
    def _metadata(context: Any) -> dict[str, str]:
        return {
            k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)
        }

    def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 (gRPC method names)
        return self._call(context, "live", None, lambda: (pb.ServerLiveResponse(live=True), "", ""))

    def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._call(
            context,
            "ready",
            None,
            lambda: (pb.ServerReadyResponse(ready=self.core.ready()[0]), "", ""),
        )

    def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        def work() -> tuple[Any, str, str]:
            ready = self.core.model_ready(request.name, request.version or None)
            return pb.ModelReadyResponse(ready=ready), request.name, request.version

        return self._call(context, "model_ready", "score", work)

    def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        answer = pb.ServerMetadataResponse(
            name=SERVER_NAME, version=featurelib.__version__, extensions=EXTENSIONS
        )
        return self._call(context, "server_metadata", None, lambda: (answer, "", ""))

    def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        def work() -> tuple[Any, str, str]:
            meta = self.core.metadata(request.name, request.version or None)
            tensor = pb.ModelMetadataResponse.TensorMetadata
            answer = pb.ModelMetadataResponse(
                name=meta["name"],
                versions=meta["versions"],
                platform=meta["platform"],
                inputs=[tensor(name=i["name"], datatype=i["datatype"], shape=i["shape"])
                        for i in meta["inputs"]],
                outputs=[tensor(name=o["name"], datatype=o["datatype"], shape=o["shape"])
                         for o in meta["outputs"]],
            )  # fmt: skip
            return answer, request.name, meta["parameters"]["version"]

        return self._call(context, "model_metadata", "score", work)

    def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        def work() -> tuple[Any, str, str]:
            frame = decode_request(request)
            override = self._metadata(context).get("x-model-version")
            result = self.core.infer(
                request.model_name,
                frame,
                version=request.model_version or None,
                route_override=override,
                request_id=request.id or None,
                feature_time=feature_time_parameter(
                    {k: v.string_param for k, v in request.parameters.items()}
                ),
            )
            parameters = {"content_type": pb.InferParameter(string_param="pd"),
                          "route": pb.InferParameter(string_param=result.route)}  # fmt: skip
            if result.degraded:
                parameters["degraded"] = pb.InferParameter(string_param="store_unavailable")
            output = pb.ModelInferResponse.InferOutputTensor(
                name="predict",
                datatype="FP64",
                shape=[len(result.predictions)],
                contents=pb.InferTensorContents(fp64_contents=result.predictions.tolist()),
            )
            answer = pb.ModelInferResponse(
                model_name=result.model,
                model_version=str(result.model_version),
                id=result.request_id,
                parameters=parameters,
                outputs=[output],
            )
            return answer, request.model_name, str(result.model_version)

        return self._call(context, "infer", "score", work)


def create_server(core: ScoringCore, auth: Authenticator, address: str) -> grpc.Server:
    """A started-later gRPC server bound to `address` (host:port) serving `core`."""
    limit = core.config.max_body_bytes
    server = grpc.server(
        ThreadPoolExecutor(core.config.threads, thread_name_prefix="featurelib-grpc"),
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", max(limit, 64 << 20)),
            ("grpc.so_reuseport", 0),
        ],
    )
    register = pb_grpc.add_GRPCInferenceServiceServicer_to_server
    register(InferenceServicer(core, auth), server)  # type: ignore[no-untyped-call]
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError:
        bound = 0
    if bound == 0:
        raise ServingError(f"cannot listen on {address} for gRPC", hint="pick a free port")
    return server
