"""The `featurelib serve` process: REST (uvicorn) and gRPC in one process on one core.

    with ScoringService.open(root, config) as service:   # registry, definitions, Redis, logger
        service.run()                                     # blocks until SIGTERM / SIGINT

Start-up: open the model registry and the serving definitions, connect to Redis (a Redis that
is down at start does not stop the service: requests get 503 until it answers), build the first
model snapshot (a registry that cannot be read at start is an error), start the feature logger,
bind gRPC and HTTP.

Shutdown on SIGTERM or SIGINT: both transports stop accepting at once; requests in flight finish
(up to `DRAIN_S`); then shadow scoring finishes, the feature logger replays any spill and
flushes to Parquet, and the registry, definitions watcher and Redis pool are closed.

The Redis client carries the request deadline (`store_client`): socket timeout 45% of the
deadline, connect timeout 25%, one retry after 10 ms, so an unreachable store is reported within
about one deadline, and a restarted Redis is used again by the next request.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Self

import redis
import uvicorn
from redis.backoff import ConstantBackoff
from redis.retry import Retry

from featurelib.online.connection import connect, describe, resolve_url
from featurelib.online.live import LiveDefinitions
from featurelib.online.project import project_name
from featurelib.online.store import RedisOnlineStore
from serving.auth import Authenticator
from serving.config import ServeConfig
from serving.core import ScoringCore
from serving.metrics import ServeMetrics
from serving.registry import ModelRegistry
from serving.snapshot import ModelCatalog

log = logging.getLogger("featurelib.serve")
DRAIN_S = 10.0


def store_client(url: str | None, repo_root: Path, deadline_s: float) -> redis.Redis:
    """A Redis client whose timeouts fit inside the request deadline (module docstring)."""
    return connect(
        url,
        repo_root=repo_root,
        verify=False,
        socket_timeout=deadline_s * 0.45,
        socket_connect_timeout=deadline_s * 0.25,
        retry=Retry(ConstantBackoff(0.01), 1),
    )


def replay_clock(start: datetime | None) -> Callable[[], datetime]:
    """The feature clock: the wall clock, or `start` advancing in real time (`--now`)."""
    if start is None:
        return lambda: datetime.now(UTC)
    origin = time.monotonic()
    begin = start if start.tzinfo else start.replace(tzinfo=UTC)
    return lambda: begin + timedelta(seconds=time.monotonic() - origin)


class _Uvicorn(uvicorn.Server):  # type: ignore[misc]
    """uvicorn whose exit signal also starts draining the gRPC server."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self._on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._on_exit()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        # uvicorn's own version re-raises the signal once it has shut down, which would kill
        # the process before the gRPC drain and the feature log flush; keep ours installed.
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                signal.signal(sig, self.handle_exit)
        yield


class ScoringService:
    """Everything one serving process owns (see the module docstring)."""

    def __init__(
        self,
        root: Path,
        config: ServeConfig,
        core: ScoringCore,
        *,
        closers: list[Callable[[], None]],
    ) -> None:
        self.root = root
        self.config = config
        self.core = core
        self.auth = Authenticator(config.tokens)
        self._closers = closers
        self._grpc: Any = None
        self._grpc_stopped: threading.Event | None = None

    @classmethod
    def open(
        cls, root: str | Path, config: ServeConfig, *, progress: Callable[[str], None] = print
    ) -> Self:
        root = Path(root).resolve()
        closers: list[Callable[[], None]] = []
        try:
            registry = ModelRegistry.open(config.registry_url, repo_root=root)
            closers.append(registry.close)
            definitions = LiveDefinitions(root, interval=config.definitions_interval_s)
            closers.append(definitions.close)
            url = resolve_url(config.redis_url, repo_root=root)
            client = store_client(url, root, config.deadline_s)
            closers.append(client.close)
            store = RedisOnlineStore(client, project_name(root))
            try:
                client.ping()
            except redis.RedisError as exc:
                progress(f"warning: Redis at {describe(url)} does not answer yet ({exc})")
            metrics = ServeMetrics()
            catalog = ModelCatalog(registry, definitions, config, metrics)
            closers.append(catalog.close)
            logger = None
            if config.log_sample_rate > 0:
                from serving.feature_log import FeatureLogger

                logger = FeatureLogger(
                    root,
                    store,
                    definitions=definitions,
                    sample_rate=config.log_sample_rate,
                    flush_interval_s=config.log_flush_interval_s,
                )
                closers.append(logger.close)
            core = ScoringCore(
                root,
                store=store,
                registry=registry,
                definitions=definitions,
                config=config,
                logger=logger,
                clock=replay_clock(config.now),
                metrics=metrics,
                catalog=catalog,
            )
            closers.append(lambda: core.shadow.close(wait=True))
        except BaseException:
            for close in reversed(closers):
                _quietly(close)
            raise
        for name, served in catalog.snapshot.models.items():
            state = f"aliases {dict(served.aliases)}" if served.ready else served.problem
            progress(f"model {name}: {state}")
        return cls(root, config, core, closers=closers)

    def run(self) -> None:
        """Serve until SIGTERM/SIGINT, then drain (module docstring)."""
        from serving.rest import create_app

        config = self.config
        # Everything loaded so far (definitions, models, Feast's and Polars' modules) lives as
        # long as the process: moved out of the cyclic GC's reach, a full collection no longer
        # walks it, which otherwise stalls every request in flight for tens of milliseconds.
        gc.collect()
        gc.freeze()
        if config.grpc_port is not None:
            from serving.grpc_service import create_server

            self._grpc = create_server(self.core, self.auth, f"{config.host}:{config.grpc_port}")
            self._grpc.start()
        app = create_app(self.core, self.auth)
        server = _Uvicorn(
            uvicorn.Config(
                app,
                host=config.host,
                port=config.http_port,
                log_level="warning",
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=int(DRAIN_S),
            ),
            self._stop_grpc,
        )
        grpc_text = f", gRPC on {config.host}:{config.grpc_port}" if self._grpc else ""
        print(
            f"featurelib serve: REST on http://{config.host}:{config.http_port}{grpc_text}",
            file=sys.stderr,
            flush=True,
        )
        server.run()
        self._stop_grpc()
        if self._grpc_stopped is not None:
            self._grpc_stopped.wait(DRAIN_S + 1)

    def _stop_grpc(self) -> None:
        if self._grpc is not None and self._grpc_stopped is None:
            self._grpc_stopped = self._grpc.stop(grace=DRAIN_S)

    def close(self) -> None:
        """Finish shadows, flush the feature log, close the registry, watcher and pool."""
        self._stop_grpc()
        for close in reversed(self._closers):
            _quietly(close)
        self._closers.clear()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _quietly(close: Callable[[], None]) -> None:
    try:
        close()
    except Exception as exc:  # shutting down: report and carry on closing the rest
        print(f"featurelib serve: error while closing: {exc}", file=sys.stderr, flush=True)
