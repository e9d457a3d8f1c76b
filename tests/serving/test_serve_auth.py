"""Bearer-token auth with roles on both transports (401 vs 403, open health endpoints) and the
serve configuration (YAML, environment tokens, refusal of unknown or invalid settings)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from serve_support import MODEL, ROWS, ServerProcess, infer_body

from featurelib.online.testing import RedisProcess
from serving.auth import token_digest
from serving.config import TOKENS_ENV, ServeConfig
from serving.errors import ServeConfigError
from serving.proto import grpc_predict_v2_pb2 as pb
from serving.proto import grpc_predict_v2_pb2_grpc as pb_grpc

SCORE, PUSH, ADMIN = "score-secret", "push-secret", "admin-secret"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def secured(
    serving_repo: Path,
    serving_redis: RedisProcess,
    trained_registry: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ServerProcess]:
    tokens = {
        f"sha256:{token_digest(SCORE)}": ["score"],
        PUSH: ["push"],
        ADMIN: ["score", "push", "admin"],
    }
    with ServerProcess(
        serving_repo,
        redis_url=serving_redis.url,
        registry_url=f"sqlite:///{trained_registry}",
        config={"tokens": tokens, "log_sample_rate": 0.0},
        log_dir=tmp_path_factory.mktemp("auth"),
    ) as server:
        yield server


def test_rest_roles(secured: ServerProcess) -> None:
    infer = f"/v2/models/{MODEL}/infer"
    with httpx.Client(base_url=secured.base_url, timeout=10) as http:
        assert http.get("/v2/health/live").status_code == 200  # probes need no token
        assert http.get("/v2/health/ready").status_code == 200
        assert http.post(infer, json=infer_body(ROWS)).status_code == 401
        assert http.post(infer, json=infer_body(ROWS), headers=bearer("wrong")).status_code == 401
        basic = http.post(infer, json=infer_body(ROWS), headers={"Authorization": "Basic eDp5"})
        assert basic.status_code == 401
        assert "Bearer" in basic.json()["error"]
        denied = http.post(infer, json=infer_body(ROWS), headers=bearer(PUSH))
        assert denied.status_code == 403
        assert "'score'" in denied.json()["error"]
        for token in (SCORE, ADMIN):  # SCORE is configured by its sha256 digest only
            answer = http.post(infer, json=infer_body(ROWS), headers=bearer(token))
            assert answer.status_code == 200
        # Knowing the configured digest grants nothing: it is not itself a token.
        digest = http.post(infer, json=infer_body(ROWS), headers=bearer(token_digest(SCORE)))
        assert digest.status_code == 401
        push = {"push_source_name": "flights", "df": {"carrier": []}}
        assert http.post("/push", json=push, headers=bearer(SCORE)).status_code == 403
        assert http.get("/metrics", headers=bearer(SCORE)).status_code == 403
        assert http.get("/metrics", headers=bearer(ADMIN)).status_code == 200
        reload = http.post("/admin/reload", headers=bearer(ADMIN)).json()
        assert reload["models"][MODEL]["aliases"] == {"champion": 1, "challenger": 2}


def test_grpc_roles(secured: ServerProcess) -> None:
    request = pb.ModelInferRequest(model_name=MODEL)
    for name, value in ROWS[0].items():
        tensor = request.inputs.add(name=name, shape=[1])
        if isinstance(value, float):
            tensor.datatype = "FP64"
            tensor.contents.fp64_contents.append(value)
        else:
            tensor.datatype = "BYTES"
            tensor.contents.bytes_contents.append(str(value).encode())
    with grpc.insecure_channel(secured.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        assert stub.ServerLive(pb.ServerLiveRequest()).live is True
        for metadata, code in (
            ((), grpc.StatusCode.UNAUTHENTICATED),
            ((("authorization", f"Bearer {PUSH}"),), grpc.StatusCode.PERMISSION_DENIED),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                stub.ModelInfer(request, metadata=metadata)
            assert refused.value.code() == code
        answer = stub.ModelInfer(request, metadata=(("authorization", f"Bearer {SCORE}"),))
        assert answer.model_version == "1"


def test_config_from_yaml_env_and_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "serve.yaml"
    path.write_text(
        "http_port: 9000\nrouting: {share: 0.25, per_model: {other: {share: 0.5}}}\n"
        "shadow: {refs: [{model: m, ref: 3}], max_concurrent: 2}\n"
    )
    monkeypatch.setenv(TOKENS_ENV, json.dumps({"t0k3n": ["score"]}))
    config = ServeConfig.load(path, http_port=9100, grpc_port=None)
    assert config.http_port == 9100  # flags win over the file
    assert config.routing_for("m").share == 0.25
    assert config.routing_for("other").share == 0.5
    assert config.shadow.refs[0].ref == "3"
    assert config.tokens == {"t0k3n": ("score",)}
    path.write_text("http_prot: 9000\n")
    with pytest.raises(ServeConfigError, match="unknown settings \\['http_prot'\\]"):
        ServeConfig.load(path)
    path.write_text("routing: {share: 1.5}\n")
    with pytest.raises(ServeConfigError, match=r"routing\.share = 1\.5"):
        ServeConfig.load(path)
    path.write_text("tokens: {abc: [root]}\n")
    with pytest.raises(ServeConfigError, match="unknown roles"):
        ServeConfig.load(path)
