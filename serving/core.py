"""The transport-free scoring core shared by REST and gRPC.

    core = ScoringCore(root, store=store, registry=registry, definitions=live, config=config,
                       logger=feature_logger, clock=clock)
    result = core.infer("flight_delay_model", inputs)      # inputs: keys + request fields
    result.model_version, result.predictions               # the version that answered

One scoring: pick the served model's version (path pin > override header > sticky
champion/challenger split, see `serving.routing`) from the current snapshot (`serving.snapshot`),
check the input columns against the version's feature service (`serving.inputs`), read its
features in one pipelined Redis round trip at the server clock, predict in one batch, log the
request (one XADD), count metrics, hand shadow versions to the bounded shadow pool and return.

Everything here blocks (Redis, model): transports call it from worker threads. The online store
client carries the request deadline as socket timeouts with at most one quick retry (see
`serving.server.store_client`), so an unreachable Redis costs at most about one deadline: then
the request gets a 503 (`FeatureStoreUnavailableError`), or, with `on_store_unavailable:
defaults`, the configured default feature values (null for the others) and the response says
`degraded`. Redis coming back needs nothing: the pool reconnects on the next request.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import redis

from featurelib.errors import FeaturelibError, RepoError
from featurelib.online.live import LiveDefinitions
from featurelib.online.read import NOT_FOUND, OnlineResponse, ServingPlan, get_online_features
from featurelib.online.server import RedisUnavailableError
from featurelib.online.store import RedisOnlineStore
from featurelib.views import FeatureService, Projection
from serving.config import ServeConfig
from serving.errors import (
    BadRequestError,
    FeatureNotFoundError,
    FeatureStoreUnavailableError,
    ModelInputError,
    PayloadTooLargeError,
    ServingError,
)
from serving.inputs import Signature, signature_of
from serving.metrics import ServeMetrics
from serving.registry import ModelRegistry
from serving.routing import Route, ShadowPool
from serving.snapshot import LoadedVersion, ModelCatalog, ServedModel

if TYPE_CHECKING:
    from serving.feature_log import FeatureLogger

log = logging.getLogger("featurelib.serve")
Clock = Callable[[], datetime]
_STORE_ERRORS = (redis.RedisError, RedisUnavailableError, OSError)


@dataclass(frozen=True)
class ScoreResult:
    """One scored request: the answering version, a prediction per row, the features read."""

    request_id: str
    model: str
    model_version: int
    predictions: np.ndarray
    response: OnlineResponse
    route: str  # champion | challenger | pinned | override
    degraded: bool = False  # the store was unavailable: default feature values were used


class ScoringCore:
    """Scoring, feature reads and pushes, independent of any transport (module docstring)."""

    def __init__(
        self,
        root: str | Path,
        *,
        store: RedisOnlineStore,
        registry: ModelRegistry,
        definitions: LiveDefinitions,
        config: ServeConfig,
        logger: FeatureLogger | None = None,
        clock: Clock | None = None,
        metrics: ServeMetrics | None = None,
        catalog: ModelCatalog | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self.store = store
        self.registry = registry
        self.definitions = definitions
        self.config = config
        self.logger = logger
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.metrics = metrics or ServeMetrics()
        self.catalog = catalog or ModelCatalog(registry, definitions, config, self.metrics)
        self.shadow = ShadowPool(
            config.shadow.max_concurrent,
            config.shadow.sample_rate,
            on_drop=lambda: self.metrics.shadow.labels("", "", "dropped").inc(),
        )
        self._plans: dict[tuple[Any, ...], tuple[ServingPlan, Signature]] = {}
        self._pushers: dict[tuple[str, int], Any] = {}
        self._push_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ scoring

    def infer(
        self,
        model: str,
        inputs: pl.DataFrame,
        *,
        version: str | None = None,
        route_override: str | None = None,
        request_id: str | None = None,
        feature_time: datetime | None = None,
    ) -> ScoreResult:
        """Score `inputs` (one row per prediction) with `model` (module docstring).

        `feature_time` (replay mode, `allow_feature_time` in the config) reads the features at
        that time instead of the clock's. Reads see the store as it is, so they equal the
        offline values only while it holds nothing later than that time: the replay driver
        (`serving.demo`) pushes events up to each time before scoring at it."""
        request_id = request_id or uuid.uuid4().hex
        if feature_time is not None and not self.config.allow_feature_time:
            raise BadRequestError(
                "parameters.feature_time is only accepted in replay mode",
                where="infer request",
                hint="start the service with --allow-feature-time (allow_feature_time: true)",
            )
        self._check_rows(inputs.height)
        served = self.catalog.served(model, self.catalog.snapshot)
        where = f"model {model!r}"
        if version is not None or route_override:
            ref = version if version is not None else str(route_override)
            route = Route(served.resolve(ref), "pinned" if version is not None else "override")
            chosen = self.catalog.version(served, route.version)
            plan, signature = self._plan(chosen.info.service)
            frame = signature.validate(inputs, extra=self.config.extra_columns, where=where)
        else:
            assert served.router is not None  # served() checked readiness
            plan, signature = self._plan(served.loaded[served.router.champion].info.service)
            frame = signature.validate(inputs, extra=self.config.extra_columns, where=where)
            route = served.router.route(tuple(frame.get_column(k)[0] for k in signature.keys))
            chosen = served.loaded[route.version]
            if chosen.info.service != signature.service:  # challenger on another service
                plan, signature = self._plan(chosen.info.service)
                frame = signature.validate(inputs, extra=self.config.extra_columns, where=where)
        at = feature_time or self.clock()
        response, degraded = self._read(plan, signature, frame, at)
        predictions = self._predict(chosen, response.features)
        self._after(
            request_id, served, chosen, frame, response, predictions, at, signature, degraded
        )
        return ScoreResult(
            request_id, model, chosen.info.version, predictions, response, route.arm, degraded
        )

    def _check_rows(self, rows: int) -> None:
        if rows == 0:
            raise BadRequestError("the request has no rows", hint="send at least one row")
        if rows > self.config.max_rows:
            raise PayloadTooLargeError(
                f"the request has {rows} rows; at most {self.config.max_rows} are allowed",
                hint="split it into smaller requests (or raise max_rows in the serve config)",
            )

    def _plan(self, service: str | FeatureService) -> tuple[ServingPlan, Signature]:
        definition = self.definitions.repo.service(service) if isinstance(service, str) else service
        key = (definition.name, definition.version)
        cached = self._plans.get(key)
        if cached is None:
            plan = ServingPlan(definition)
            cached = (plan, signature_of(definition, plan))
            with self._lock:
                if len(self._plans) > 256:  # ad-hoc feature lists: keep the cache bounded
                    self._plans.clear()
                self._plans[key] = cached
        return cached

    def _read(
        self, plan: ServingPlan, signature: Signature, frame: pl.DataFrame, at: datetime
    ) -> tuple[OnlineResponse, bool]:
        started = time.perf_counter()
        try:
            return get_online_features(self.store, plan, frame, at=at), False
        except _STORE_ERRORS as exc:
            waited = time.perf_counter() - started
            if self.config.on_store_unavailable == "defaults":
                self.metrics.store_unavailable.labels("defaults").inc()
                return self._defaults(signature, frame.height), True
            self.metrics.store_unavailable.labels("error").inc()
            raise FeatureStoreUnavailableError(
                f"the online store did not answer ({type(exc).__name__}: {exc}) "
                f"after {waited:.2f}s (deadline {self.config.deadline_s:g}s)",
                where="online store",
                hint="retry later; the service recovers by itself once Redis answers",
            ) from None

    def _defaults(self, signature: Signature, rows: int) -> OnlineResponse:
        values = self.config.default_values
        frame = pl.DataFrame({name: [values.get(name)] * rows for name in signature.outputs})
        statuses = {name: [NOT_FOUND] * rows for name in signature.outputs}
        return OnlineResponse(frame, statuses, {name: [None] * rows for name in signature.outputs})

    @staticmethod
    def _predict(chosen: LoadedVersion, features: pl.DataFrame) -> np.ndarray:
        try:
            return chosen.model.predict(features)
        except ModelInputError as exc:  # the served features do not fit the model: our fault
            raise ServingError(
                f"{chosen.info.ref} cannot use the served features: {exc.what}",
                hint="retrain the model on the current feature service definition",
            ) from None

    def _after(
        self,
        request_id: str,
        served: ServedModel,
        chosen: LoadedVersion,
        frame: pl.DataFrame,
        response: OnlineResponse,
        predictions: np.ndarray,
        at: datetime,
        signature: Signature,
        degraded: bool = False,
    ) -> None:
        """Feature log, metrics and shadow scoring: never allowed to fail the request."""
        info = chosen.info
        try:
            self.metrics.observe_features(signature.service, response.statuses)
            self.metrics.observe_predictions(info.name, info.version, predictions)
            if self.logger is not None:
                self.logger.log(
                    request_id,
                    datetime.now(UTC),
                    at,
                    signature.service,
                    signature.service_version,
                    info.name,
                    info.version,
                    frame,
                    response,
                    predictions,
                    degraded,
                )
        except Exception:
            log.exception("feature logging / metrics failed for request %s", request_id)
        shadows = [v for v in served.shadows if v != info.version]
        if shadows and self.shadow.sampled():
            for number in shadows:
                self._shadow(served, number, frame, response, predictions, info.service, at)

    def _shadow(
        self,
        served: ServedModel,
        number: int,
        frame: pl.DataFrame,
        response: OnlineResponse,
        live: np.ndarray,
        live_service: str,
        at: datetime,
    ) -> None:
        shadow = served.loaded[number]

        def work() -> None:
            try:
                features = response.features
                if shadow.info.service != live_service:  # its own features, read in background
                    plan, signature = self._plan(shadow.info.service)
                    inputs = signature.validate(frame, where=f"shadow {shadow.info.ref}")
                    features = get_online_features(self.store, plan, inputs, at=at).features
                predictions = shadow.model.predict(features)
            except Exception:
                self.metrics.observe_shadow(served.name, number, "failed")
                raise
            self.metrics.observe_shadow(served.name, number, "scored", np.abs(predictions - live))

        self.shadow.submit(work)

    # ------------------------------------------------------------------ metadata

    def metadata(self, model: str, version: str | None = None) -> dict[str, Any]:
        """OIP model metadata: versions, platform, input columns, the `predict` output."""
        served = self.catalog.served(model)
        assert served.router is not None
        number = served.router.champion if version is None else served.resolve(version)
        chosen = self.catalog.version(served, number)
        _, signature = self._plan(chosen.info.service)
        return {
            "name": model,
            "versions": [str(v) for v in served.versions],
            "platform": f"featurelib-{chosen.info.flavor}",
            "inputs": [c.metadata() for c in signature.columns],
            "outputs": [{"name": "predict", "datatype": "FP64", "shape": [-1]}],
            "parameters": {
                "content_type": "pd",
                "version": str(number),
                "feature_service": signature.service,
                "service_version": signature.service_version,
                "aliases": {a: str(v) for a, v in served.aliases.items()},
            },
        }

    def model_ready(self, model: str, version: str | None = None) -> bool:
        served = self.catalog.snapshot.models.get(model)
        if served is None:
            self.catalog.served(model)  # raises the 404 naming the served models
            return False
        if not served.ready:
            return False
        if version is None:
            return True
        return served.resolve(version) in served.loaded or self._loads(served, version)

    def _loads(self, served: ServedModel, version: str) -> bool:
        try:
            self.catalog.version(served, served.resolve(version))
            return True
        except FeaturelibError:
            return False

    def ready(self) -> tuple[bool, str]:
        """(ready, reason): registry reachable, definitions loaded, every served model's
        champion loaded."""
        if not self.catalog.registry_ok:
            return False, "the model registry is unreachable"
        if not self.definitions.repo.feature_services:
            return False, "no feature services in the serving definitions"
        models = self.catalog.snapshot.models
        if not models:
            return False, "no models to serve (none has a champion alias)"
        waiting = [f"{m.name}: {m.problem}" for m in models.values() if not m.ready]
        if waiting:
            return False, "; ".join(waiting)
        return True, "ready"

    # ------------------------------------------------------------------ feature endpoints

    def online_features(
        self,
        service: str | None,
        entities: Mapping[str, Sequence[Any]],
        request_context: Mapping[str, Sequence[Any]] | None = None,
        full_feature_names: bool = False,
        *,
        features: Sequence[str] = (),
    ) -> dict[str, Any]:
        """Feast's `/get-online-features` body for a feature service (or, with `service` None,
        a list of `view:feature` references): rows in request order (`serving.feast_api`)."""
        from serving.feast_api import online_features_response

        definition = self._service(service, features)
        plan, signature = self._plan(definition)
        columns = {**entities, **(request_context or {})}
        scalars = sorted(n for n, v in columns.items() if not isinstance(v, list | tuple))
        if scalars:  # a string is a sequence too: "UA" would become two rows, "U" and "A"
            raise BadRequestError(
                f"entity / request_context values must be lists, one value per row: {scalars}",
                where="get-online-features",
                hint='e.g. "entities": {"carrier": ["UA", "AA"]}',
            )
        lengths = {name: len(values) for name, values in columns.items()}
        if len(set(lengths.values())) > 1:
            raise BadRequestError(
                f"entity and request_context columns differ in length: {lengths}",
                hint="send one value per row in every column",
            )
        rows = next(iter(lengths.values()), 0)
        self._check_rows(rows)
        try:
            frame = pl.DataFrame({k: list(v) for k, v in columns.items()}, strict=False)
        except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
            raise BadRequestError(f"cannot read the entity columns: {exc}") from None
        where = f"feature service {definition.name!r}"
        frame = signature.validate(frame, extra="ignore", where=where)
        response, _ = self._read(plan, signature, frame, self.clock())
        self.metrics.observe_features(definition.name, response.statuses)
        keys = {k: frame.get_column(k) for k in signature.keys if k in entities}
        names = definition.output_names(full_feature_names=full_feature_names)
        return online_features_response(keys, response, names)

    def _service(self, name: str | None, refs: Sequence[str]) -> FeatureService:
        repo = self.definitions.repo
        if name:
            try:
                return repo.service(name)
            except RepoError as exc:
                raise FeatureNotFoundError(exc.what, hint=exc.hint) from None
        if not refs:
            raise BadRequestError(
                "name a feature_service or list features",
                hint='e.g. {"features": ["carrier_delays:carrier_flights_7d"], "entities": ...}',
            )
        selected: dict[str, list[str]] = {}
        for ref in refs:
            view, sep, feature = str(ref).partition(":")
            if not sep or not view or not feature:
                raise BadRequestError(
                    f"feature reference {ref!r} is not 'view:feature'",
                    hint="e.g. carrier_delays:carrier_flights_7d",
                )
            selected.setdefault(view, []).append(feature)
        try:
            projections = [Projection(repo.view(v), names) for v, names in selected.items()]
            return FeatureService("_request", projections)
        except FeaturelibError as exc:
            raise FeatureNotFoundError(exc.what, hint=exc.hint) from None

    def push(self, source: str, rows: Any, to: str = "online_and_offline") -> dict[str, Any]:
        """Feast's `/push`: validate and apply rows to a source (offline log + online)."""
        from serving.feast_api import apply_push

        if to not in ("online", "offline", "online_and_offline"):
            raise BadRequestError(
                f"'to' = {to!r} is not a push target",
                hint="use online, offline or online_and_offline",
            )
        if source not in self.definitions.repo.sources:  # before a lock is kept for the name
            raise FeatureNotFoundError(
                f"no source named {source!r} to push to",
                where="push",
                hint=f"sources are: {sorted(self.definitions.repo.sources)}",
            )
        lock = self._push_locks.setdefault(source, threading.Lock())
        with lock:  # a Pusher is used by one thread at a time
            return apply_push(self, source, rows, to)

    def close(self) -> None:
        self.shadow.close(wait=True)
        self.catalog.close()
