"""Hot reload: the served models as one immutable snapshot, swapped atomically.

`ModelCatalog` reads the registry once at start, then a background thread polls
`registry.change_counter()` (one tiny query) every `reload_interval_s`. When it moved, a new
`Snapshot` is built off the request path: aliases resolved, every version an alias or shadow
ref points to loaded (artifact sha256 verified by the registry), checked against the serving
definitions and warmed with one prediction, and only then swapped in with a single reference
assignment. A request reads `catalog.snapshot` once and uses that object to the end, so
requests in flight finish on the versions they started with and no request ever sees a half
loaded model. A version that fails to load keeps the previous snapshot's entry for its model
(and counts a failed reload); a registry that cannot be reached keeps the whole snapshot and
makes the service report not-ready until it answers again.

Which models: `ServeConfig.models`, or every registered model whose champion alias is set and
whose feature service exists in the serving definitions.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import polars as pl

from featurelib.online.live import LiveDefinitions
from serving.config import ServeConfig
from serving.errors import ModelNotFoundError, ModelNotReadyError
from serving.metrics import ServeMetrics
from serving.model import TrainedModel
from serving.registry import ModelRegistry, ModelVersion
from serving.routing import Router

log = logging.getLogger("featurelib.serve")
_LOADED_CACHE = 16  # versions kept loaded beyond those the snapshot uses (pinned requests)


@dataclass(frozen=True)
class LoadedVersion:
    """A registered version with its model loaded, checked and warmed."""

    info: ModelVersion
    model: TrainedModel


@dataclass(frozen=True)
class ServedModel:
    """One served model: its aliases, loaded versions, router and shadow versions."""

    name: str
    aliases: Mapping[str, int]
    versions: tuple[int, ...]
    loaded: Mapping[int, LoadedVersion]
    router: Router | None
    shadows: tuple[int, ...] = ()
    problem: str | None = None

    @property
    def ready(self) -> bool:
        return self.router is not None and self.router.champion in self.loaded

    def resolve(self, ref: str | int) -> int:
        """A version number from a number, `v3`, `latest` or an alias (404 if none matches)."""
        text = str(ref).strip().lstrip("@")
        if text.lower().startswith("v") and text[1:].isdigit():
            text = text[1:]
        if text.isdigit():
            number = int(text)
        elif text == "latest" and self.versions:
            number = self.versions[-1]
        elif text in self.aliases:
            number = self.aliases[text]
        else:
            raise ModelNotFoundError(
                f"model {self.name!r} has no version or alias {ref!r}",
                hint=f"versions: {list(self.versions)}; aliases: {dict(self.aliases)}",
            )
        if number not in self.versions:
            raise ModelNotFoundError(
                f"model {self.name!r} has no version {number}",
                hint=f"its versions are {list(self.versions)}",
            )
        return number


@dataclass(frozen=True)
class Snapshot:
    """Every served model at one registry change counter."""

    counter: int
    models: Mapping[str, ServedModel]
    built_at: datetime = field(default_factory=lambda: datetime.now(UTC))


class ModelCatalog:
    """The current `Snapshot`, rebuilt in the background when the registry changes."""

    def __init__(
        self,
        registry: ModelRegistry,
        definitions: LiveDefinitions,
        config: ServeConfig,
        metrics: ServeMetrics | None = None,
        *,
        background: bool = True,
    ) -> None:
        self.registry = registry
        self.definitions = definitions
        self.config = config
        self.metrics = metrics
        self.registry_ok = True
        self._loaded: OrderedDict[tuple[str, int], LoadedVersion] = OrderedDict()
        self._lock = threading.Lock()  # one build at a time
        self.snapshot = Snapshot(-1, {})
        self.refresh(force=True)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if background:
            self._thread = threading.Thread(
                target=self._watch, name="featurelib-model-reload", daemon=True
            )
            self._thread.start()

    # ------------------------------------------------------------------ reloading

    def refresh(self, *, force: bool = False) -> bool:
        """Rebuild and swap the snapshot if the registry changed (or `force`); True if swapped.
        Raises when the registry cannot be read (the old snapshot stays)."""
        with self._lock:
            try:
                counter = self.registry.change_counter()
            except Exception:
                self.registry_ok = False
                raise
            self.registry_ok = True
            if not force and counter == self.snapshot.counter:
                return False
            snapshot = self._build(counter)
            self.snapshot = snapshot  # the atomic swap
            if self.metrics is not None:
                self.metrics.reloads.labels("ok").inc()
                for served in snapshot.models.values():
                    self.metrics.set_aliases(served.name, served.aliases)
            return True

    def _watch(self) -> None:
        while not self._stop.wait(self.config.reload_interval_s):
            try:
                self.refresh()
            except Exception as exc:  # keep serving the last good snapshot
                log.warning("model reload failed, serving the previous snapshot: %s", exc)
                if self.metrics is not None:
                    self.metrics.reloads.labels("failed").inc()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    # ------------------------------------------------------------------ building

    def _names(self) -> list[str]:
        if self.config.models:
            return list(self.config.models)
        services = self.definitions.repo.feature_services
        names = []
        for registered in self.registry.list_models():
            champion = registered.aliases.get(self.config.routing_for(registered.name).champion)
            if champion is None:
                log.info("not serving model %r: it has no champion alias", registered.name)
                continue
            if self.registry.get(registered.name, champion).service not in services:
                log.info(
                    "not serving model %r: its feature service is not defined", registered.name
                )
                continue
            names.append(registered.name)
        return names

    def _build(self, counter: int) -> Snapshot:
        old = self.snapshot.models
        models: dict[str, ServedModel] = {}
        for name in self._names():
            try:
                models[name] = self._build_model(name)
            except Exception as exc:
                log.error("cannot load model %r: %s", name, exc)
                if self.metrics is not None:
                    self.metrics.reloads.labels("failed").inc()
                models[name] = old.get(name) or ServedModel(
                    name, {}, (), {}, None, problem=f"cannot be loaded: {exc}"
                )
        used = {(m.name, v) for m in models.values() for v in m.loaded}
        for key in list(self._loaded):  # keep a few extra versions for pinned requests
            if len(self._loaded) <= len(used) + _LOADED_CACHE:
                break
            if key not in used:
                del self._loaded[key]
        return Snapshot(counter, models)

    def _build_model(self, name: str) -> ServedModel:
        routing = self.config.routing_for(name)
        try:
            versions = tuple(v.version for v in self.registry.versions(name))
        except ModelNotFoundError:
            return ServedModel(name, {}, (), {}, None, problem="not registered")
        aliases = self.registry.aliases(name)
        champion = aliases.get(routing.champion)
        if champion is None:
            return ServedModel(
                name, aliases, versions, {}, None, problem=f"alias {routing.champion!r} is not set"
            )
        wanted = [champion]
        challenger = aliases.get(routing.challenger) if routing.share > 0 else None
        if challenger is not None:
            wanted.append(challenger)
        probe = ServedModel(name, aliases, versions, {}, None)
        shadows = []
        for ref in self.config.shadow.refs:
            if ref.model == name:
                try:
                    shadows.append(probe.resolve(ref.ref))
                except ModelNotFoundError as exc:
                    log.warning("shadow %s@%s skipped: %s", name, ref.ref, exc)
        loaded = {v: self.load(name, v) for v in dict.fromkeys([*wanted, *shadows])}
        router = Router(champion, challenger, routing.share)
        return ServedModel(name, aliases, versions, loaded, router, tuple(shadows))

    def load(self, name: str, version: int) -> LoadedVersion:
        """A version loaded, checked against the serving definitions and warmed (cached)."""
        key = (name, version)
        cached = self._loaded.get(key)
        if cached is not None:
            self._loaded.move_to_end(key)
            return cached
        info = self.registry.get(name, version)
        model = self.registry.load(info)
        self._check(info, model)  # threads per prediction: set on load (serving.model)
        model.predict(pl.DataFrame({n: [None] for n in model.feature_names}))  # warm-up
        loaded = LoadedVersion(info, model)
        self._loaded[key] = loaded
        return loaded

    def _check(self, info: ModelVersion, model: TrainedModel) -> None:
        services = self.definitions.repo.feature_services
        if info.service not in services:
            raise ModelNotReadyError(
                f"{info.ref} was trained on feature service {info.service!r}, which the serving "
                "definitions do not have",
                hint="restore the service (and `feast apply`) or register a model of a served one",
            )
        outputs = set(services[info.service].output_names())
        missing = [n for n in model.feature_names if n not in outputs]
        if missing:
            raise ModelNotReadyError(
                f"{info.ref} needs features {missing[:10]} that service {info.service!r} no "
                "longer serves",
                hint="retrain the model on the current definition",
            )

    # ------------------------------------------------------------------ lookups

    def served(self, name: str, snapshot: Snapshot | None = None) -> ServedModel:
        """The served model `name` in `snapshot` (404 when not served, 503 when not ready)."""
        models = (snapshot or self.snapshot).models
        served = models.get(name)
        if served is None:
            raise ModelNotFoundError(
                f"model {name!r} is not served here",
                hint=f"served models: {sorted(models)}",
            )
        if not served.ready:
            raise ModelNotReadyError(f"model {name!r} is not ready: {served.problem}")
        return served

    def version(self, served: ServedModel, number: int) -> LoadedVersion:
        """A version of a served model: from the snapshot, else loaded on demand (pinned)."""
        loaded = served.loaded.get(number)
        if loaded is not None:
            return loaded
        with self._lock:
            return self.load(served.name, number)
