"""Open Inference Protocol conformance of `featurelib serve` on REST and gRPC: health, server and
model metadata, readiness, inference (answers equal the model on features read in-process),
version pinning and the override header, and errors (4xx naming the field, never a traceback)."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from serve_support import MODEL, ROWS, ServerProcess, expected_predictions, infer_body

from featurelib.online.testing import RedisProcess
from serving.proto import grpc_predict_v2_pb2 as pb
from serving.proto import grpc_predict_v2_pb2_grpc as pb_grpc

INPUTS = [
    ("carrier", "BYTES"),
    ("origin", "BYTES"),
    ("dest", "BYTES"),
    ("tailnum", "BYTES"),
    ("distance", "FP64"),
    ("scheduled_departure", "BYTES"),
]


@pytest.fixture(scope="module")
def http(scoring_server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=scoring_server.base_url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def stub(scoring_server: ServerProcess) -> Iterator[Any]:
    with grpc.insecure_channel(scoring_server.grpc_address) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


@pytest.fixture(scope="module")
def expected(
    serving_repo: Path, serving_redis: RedisProcess, trained_registry: Path
) -> dict[int, list[float]]:
    """Each version's predictions for ROWS, computed in this process."""
    return {
        v: expected_predictions(serving_repo, serving_redis.url, trained_registry, v, ROWS)
        for v in (1, 2, 3)
    }


def grpc_request(rows: list[dict[str, Any]], *, raw: bool = False, **fields: Any) -> Any:
    request = pb.ModelInferRequest(model_name=MODEL, **fields)
    for name, datatype in INPUTS:
        values = [row[name] for row in rows]
        tensor = request.inputs.add(name=name, datatype=datatype, shape=[len(rows)])
        if raw and datatype == "FP64":
            request.raw_input_contents.append(struct.pack(f"<{len(values)}d", *values))
        elif raw:
            encoded = [(v or "").encode() for v in values]
            request.raw_input_contents.append(
                b"".join(struct.pack("<I", len(e)) + e for e in encoded)
            )
        elif datatype == "FP64":
            tensor.contents.fp64_contents.extend(values)
        else:
            tensor.contents.bytes_contents.extend((v or "").encode() for v in values)
    return request


# ----------------------------------------------------------------------------- REST


def test_rest_health_and_server_metadata(http: httpx.Client) -> None:
    assert http.get("/v2/health/live").json() == {"live": True}
    ready = http.get("/v2/health/ready")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    meta = http.get("/v2").json()
    assert meta["name"] == "featurelib"
    assert "feast_online_features" in meta["extensions"]


def test_rest_model_metadata_lists_input_columns_and_versions(http: httpx.Client) -> None:
    meta = http.get(f"/v2/models/{MODEL}").json()
    assert meta["name"] == MODEL
    assert meta["versions"] == ["1", "2", "3"]
    assert meta["platform"] == "featurelib-xgboost"
    assert [(i["name"], i["datatype"]) for i in meta["inputs"]] == INPUTS
    assert meta["inputs"][-1]["parameters"] == {"content_type": "datetime"}
    assert meta["outputs"] == [{"name": "predict", "datatype": "FP64", "shape": [-1]}]
    assert meta["parameters"]["version"] == "1"
    assert meta["parameters"]["aliases"] == {"champion": "1", "challenger": "2"}
    pinned = http.get(f"/v2/models/{MODEL}/versions/3").json()
    assert pinned["parameters"]["version"] == "3"


def test_rest_model_ready(http: httpx.Client) -> None:
    assert http.get(f"/v2/models/{MODEL}/ready").json() == {"name": MODEL, "ready": True}
    assert http.get(f"/v2/models/{MODEL}/versions/3/ready").status_code == 200
    assert http.get("/v2/models/nope/ready").status_code == 404


def test_rest_infer_answers_like_the_model_on_online_features(
    http: httpx.Client, expected: dict[int, list[float]]
) -> None:
    response = http.post(f"/v2/models/{MODEL}/infer", json=infer_body(ROWS, request_id="req-1"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == MODEL
    assert body["model_version"] == "1"
    assert body["id"] == "req-1"
    assert body["parameters"] == {"content_type": "pd", "route": "champion"}
    assert response.headers["x-model-version"] == "1"
    [output] = body["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == ("predict", "FP64", [3])
    assert output["data"] == pytest.approx(expected[1], abs=1e-12)


def test_rest_version_pin_and_override_header(
    http: httpx.Client, expected: dict[int, list[float]]
) -> None:
    pinned = http.post(f"/v2/models/{MODEL}/versions/3/infer", json=infer_body(ROWS)).json()
    assert (pinned["model_version"], pinned["parameters"]["route"]) == ("3", "pinned")
    assert pinned["outputs"][0]["data"] == pytest.approx(expected[3], abs=1e-12)
    for header, version in (("2", "2"), ("challenger", "2"), ("v3", "3")):
        answer = http.post(
            f"/v2/models/{MODEL}/infer",
            json=infer_body(ROWS),
            headers={"X-Model-Version": header},
        ).json()
        assert (answer["model_version"], answer["parameters"]["route"]) == (version, "override")
        assert answer["outputs"][0]["data"] == pytest.approx(expected[int(version)], abs=1e-12)
    assert expected[1] != expected[3]  # the versions really differ


def _error(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"], str)
    assert "Traceback" not in body["error"]
    return body["error"]


def test_rest_errors_name_the_field_and_what_was_expected(http: httpx.Client) -> None:
    url = f"/v2/models/{MODEL}/infer"
    message = _error(http.post("/v2/models/nope/infer", json=infer_body(ROWS)), 404)
    assert "'nope'" in message
    assert MODEL in message
    assert "no version 9" in _error(
        http.post(f"/v2/models/{MODEL}/versions/9/infer", json=infer_body(ROWS)), 404
    )
    missing = [{k: v for k, v in row.items() if k != "tailnum"} for row in ROWS]
    message = _error(http.post(url, json=infer_body(missing)), 400)
    assert "missing input column 'tailnum'" in message
    assert "String (BYTES)" in message
    wrong = [{**row, "distance": str(row["distance"])} for row in ROWS]
    message = _error(http.post(url, json=infer_body(wrong)), 400)
    assert "'distance'" in message
    assert "expected Float64 (FP64)" in message
    bad_time = [{**row, "scheduled_departure": "tomorrow"} for row in ROWS]
    message = _error(http.post(url, json=infer_body(bad_time)), 400)
    assert "'scheduled_departure' row 0" in message
    assert "ISO 8601" in message
    mistyped = infer_body(ROWS)
    [distance] = [i for i in mistyped["inputs"] if i["name"] == "distance"]
    distance["data"] = ["far", "far", "far"]  # declared FP64
    assert "'distance'" in _error(http.post(url, json=mistyped), 400)
    shape = infer_body(ROWS)
    shape["inputs"][0]["shape"] = [2]
    assert "shape [2]" in _error(http.post(url, json=shape), 400)
    assert "not valid JSON" in _error(http.post(url, content=b"{nope"), 400)
    odd = infer_body(ROWS) | {"parameters": [1]}
    assert "'parameters' must be an object" in _error(http.post(url, json=odd), 400)
    listed = infer_body(ROWS)
    listed["inputs"][0]["datatype"] = ["BYTES"]
    assert "datatype ['BYTES'] is not supported" in _error(http.post(url, json=listed), 400)
    negative = infer_body(ROWS)
    negative["inputs"][0]["shape"] = [-1, -3]
    assert "shape [-1, -3]" in _error(http.post(url, json=negative), 400)


def test_rest_oversized_body_is_413(http: httpx.Client) -> None:
    padded = [{**row, "note": "x" * 400_000} for row in ROWS]  # 1.2 MB, over the 1 MiB default
    message = _error(http.post(f"/v2/models/{MODEL}/infer", json=infer_body(padded)), 413)
    assert "exceeds the limit of 1048576 bytes" in message
    too_many = _error(http.post(f"/v2/models/{MODEL}/infer", json=infer_body(ROWS * 3400)), 413)
    assert "10200 rows; at most 10000" in too_many


# ----------------------------------------------------------------------------- gRPC


def test_grpc_health_and_metadata(stub: Any) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest()).live is True
    assert stub.ServerReady(pb.ServerReadyRequest()).ready is True
    assert stub.ServerMetadata(pb.ServerMetadataRequest()).name == "featurelib"
    assert stub.ModelReady(pb.ModelReadyRequest(name=MODEL)).ready is True
    assert stub.ModelReady(pb.ModelReadyRequest(name=MODEL, version="2")).ready is True
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name=MODEL))
    assert list(meta.versions) == ["1", "2", "3"]
    assert [(i.name, i.datatype) for i in meta.inputs] == INPUTS
    assert [(o.name, o.datatype, list(o.shape)) for o in meta.outputs] == [
        ("predict", "FP64", [-1])
    ]


@pytest.mark.parametrize("raw", [False, True], ids=["contents", "raw_input_contents"])
def test_grpc_infer_matches_rest(stub: Any, expected: dict[int, list[float]], raw: bool) -> None:
    answer = stub.ModelInfer(grpc_request(ROWS, raw=raw, id="g-1"))
    assert (answer.model_name, answer.model_version, answer.id) == (MODEL, "1", "g-1")
    assert answer.parameters["route"].string_param == "champion"
    [output] = answer.outputs
    assert (output.name, output.datatype, list(output.shape)) == ("predict", "FP64", [3])
    assert list(output.contents.fp64_contents) == pytest.approx(expected[1], abs=1e-12)


def test_grpc_version_pin_and_override_metadata(
    stub: Any, expected: dict[int, list[float]]
) -> None:
    pinned = stub.ModelInfer(grpc_request(ROWS, model_version="3"))
    assert pinned.model_version == "3"
    overridden = stub.ModelInfer(grpc_request(ROWS), metadata=[("x-model-version", "challenger")])
    assert overridden.model_version == "2"
    assert list(overridden.outputs[0].contents.fp64_contents) == pytest.approx(expected[2])


def test_grpc_errors_carry_status_codes_and_field_names(stub: Any) -> None:
    with pytest.raises(grpc.RpcError) as unknown:
        stub.ModelInfer(pb.ModelInferRequest(model_name="nope", inputs=grpc_request(ROWS).inputs))
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert "'nope'" in unknown.value.details()
    request = grpc_request(ROWS)
    del request.inputs[3]  # tailnum
    with pytest.raises(grpc.RpcError) as missing:
        stub.ModelInfer(request)
    assert missing.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "missing input column 'tailnum'" in missing.value.details()
    request = grpc_request(ROWS)
    request.inputs[4].datatype = "BYTES"  # distance sent as text
    request.inputs[4].contents.Clear()
    request.inputs[4].contents.bytes_contents.extend([b"1", b"2", b"3"])
    with pytest.raises(grpc.RpcError) as wrong:
        stub.ModelInfer(request)
    assert wrong.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'distance'" in wrong.value.details()
    assert "FP64" in wrong.value.details()
    with pytest.raises(grpc.RpcError) as big:
        stub.ModelInfer(grpc_request(ROWS * 8000))  # ~1.3 MB, over the 1 MiB limit
    assert big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_requests_are_counted_by_version_and_status(http: httpx.Client, stub: Any) -> None:
    from serve_support import metric_value

    http.post(f"/v2/models/{MODEL}/infer", json=infer_body(ROWS))
    stub.ModelInfer(grpc_request(ROWS))
    text = http.get("/metrics").text
    for transport in ("rest", "grpc"):
        served = metric_value(
            text,
            "featurelib_serve_requests_total",
            transport=transport,
            endpoint="infer",
            model=MODEL,
            model_version="1",
            status="200",
        )
        assert served >= 1
    assert metric_value(text, "featurelib_serve_requests_total", status="404") >= 1
    # Names of models that are not served never become labels (unbounded series otherwise).
    assert 'model="nope"' not in text
    present = metric_value(
        text,
        "featurelib_serve_feature_status_total",
        feature="carrier_flights_7d",
        status="PRESENT",
    )
    assert present >= 2
    assert metric_value(text, "featurelib_serve_request_seconds_count", endpoint="infer") >= 2
    assert metric_value(text, "featurelib_serve_model_alias", model=MODEL, alias="champion") == 1
