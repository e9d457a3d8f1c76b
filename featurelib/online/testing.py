"""Throwaway redis-server processes for tests and benchmarks (never the system Redis).

`RedisProcess` starts a real `redis-server` (see `find_redis_server`) on a free port with a
temporary directory and no persistence; it can be stopped, killed (to simulate a crash) and
restarted on the same port, and cleans up when closed, garbage-collected or at exit.
"""

from __future__ import annotations

import contextlib
import queue
import shutil
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote

import redis

from featurelib.online.server import (
    _POLL,
    _PORT_IN_USE,
    HOST,
    START_TIMEOUT,
    RedisUnavailableError,
    _answers,
    _file_size,
    _log_tail,
    _PortInUseError,
    _socket_path,
    _write_config,
    find_redis_server,
    free_port,
)


def _reap(processes: list[subprocess.Popen[bytes]], directory: Path) -> None:
    """Finalizer of RedisProcess: kill what still runs and remove the directory."""
    for process in processes:
        if process.poll() is None:
            process.kill()
            process.wait()
    processes.clear()
    shutil.rmtree(directory, ignore_errors=True)


class RedisProcess:
    """A throwaway redis-server child process for tests (no persistence); see module docstring.

    `args` are extra `redis-server` command-line options (e.g. `["--maxmemory", "10mb"]`);
    `password` sets `requirepass` and goes into `url`.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        password: str | None = None,
        args: Sequence[str] = (),
        executable: Path | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.executable = executable or find_redis_server()
        self.password = password
        self.args = tuple(args)
        self.start_timeout = start_timeout
        self.dir = Path(tempfile.mkdtemp(prefix="featurelib-redis-"))
        self.socket_path = _socket_path(self.dir)
        self.log_path = self.dir / "redis.log"
        self._port = port
        self._processes: list[subprocess.Popen[bytes]] = []
        self._finalizer = weakref.finalize(self, _reap, self._processes, self.dir)

    # ---- lifecycle

    def start(self) -> Self:
        """Start the server (no-op if it runs); on a port clash pick another unless fixed."""
        if self.running:
            return self
        if self._port is not None:
            try:
                self._spawn(self._port)
            except _PortInUseError:
                raise RedisUnavailableError(
                    f"port {self._port} is taken by another process",
                    where=str(self.dir),
                    hint="stop that process or use another port",
                ) from None
            return self
        for _attempt in range(5):
            with contextlib.suppress(_PortInUseError):
                self._spawn(free_port())
                return self
        raise RedisUnavailableError("no free port after 5 attempts", where=str(self.dir))

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server gracefully (SIGTERM; SIGKILL after `timeout`)."""
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._processes.clear()

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would."""
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        self._processes.clear()

    def restart(self) -> Self:
        """Stop the server if it runs and start it again on the same port."""
        self.stop()
        return self.start()

    def close(self) -> None:
        """Stop the server and delete its directory."""
        self._finalizer()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ---- addresses

    @property
    def running(self) -> bool:
        process = self._process
        return process is not None and process.poll() is None

    @property
    def pid(self) -> int | None:
        process = self._process
        return process.pid if process is not None else None

    @property
    def port(self) -> int:
        if self._port is None:
            raise RedisUnavailableError("the server was never started", where=str(self.dir))
        return self._port

    def flushed_url(self) -> str:
        """The URL after FLUSHALL, restarting the server first if a test killed it."""
        self.start()
        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()
        return self.url

    @property
    def url(self) -> str:
        """`redis://[:password@]127.0.0.1:<port>/0`."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}{HOST}:{self.port}/0"

    @property
    def unix_url(self) -> str:
        """`unix://[:password@]<socket>?db=0`."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"unix://{auth}{self.socket_path}?db=0"

    # ---- internals

    @property
    def _process(self) -> subprocess.Popen[bytes] | None:
        return self._processes[-1] if self._processes else None

    def _spawn(self, port: int) -> None:
        conf = self.dir / "redis.conf"
        settings = [
            ("bind", HOST),
            ("port", str(port)),
            ("unixsocket", str(self.socket_path)),
            ("unixsocketperm", "700"),
            ("dir", str(self.dir)),
            ("save", ""),
            ("appendonly", "no"),
        ]
        if self.password:
            settings.append(("requirepass", self.password))
        _write_config(conf, settings, "Throwaway test server (featurelib.online.server)")
        log_offset = _file_size(self.log_path)
        with self.log_path.open("ab") as log:
            process = subprocess.Popen(
                [str(self.executable), str(conf), *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._processes.append(process)
        self._await_ready(process, port, log_offset)
        self._port = port

    def _await_ready(self, process: subprocess.Popen[bytes], port: int, log_offset: int) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if _answers(HOST, port, self.password):
                return
            if process.poll() is not None:
                self._processes.clear()
                log = _log_tail(self.log_path, log_offset)
                if _PORT_IN_USE in log:
                    raise _PortInUseError(port)
                raise RedisUnavailableError(
                    f"redis-server exited with status {process.returncode}:\n{log}",
                    where=str(self.dir),
                )
            time.sleep(_POLL)
        self.kill()
        raise RedisUnavailableError(
            f"redis-server did not answer within {self.start_timeout:g} s",
            where=str(self.dir),
            hint=_log_tail(self.log_path, log_offset),
        )


class StderrLines:
    """The stderr lines of a child process, read by a background thread, so a test can wait
    for a line with a deadline instead of blocking forever on a silent process."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        if process.stderr is None:
            raise ValueError("start the process with stderr=subprocess.PIPE and text=True")
        self._lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        stream = process.stderr

        def pump() -> None:
            for line in stream:
                self._lines.put(line)

        threading.Thread(target=pump, name="stderr-lines", daemon=True).start()

    def wait_for(self, text: str, timeout: float = 60.0) -> None:
        """Return once a line containing `text` was printed; AssertionError after `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._lines.get(timeout=0.2)
            except queue.Empty:
                continue
            self.seen.append(line)
            if text in line:
                return
        raise AssertionError(
            f"no {text!r} on stderr within {timeout:g}s; it said: {''.join(self.seen)}"
        )
