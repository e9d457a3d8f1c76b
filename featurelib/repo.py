"""A feature repository: the definitions found in a directory of Python files, by kind and name."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from featurelib.entity import Entity
from featurelib.errors import DuplicateNameError, RepoError
from featurelib.sources import BatchSource, RequestSource
from featurelib.views import AggregationView, FeatureService, FeatureView, OnDemandView

_KINDS: tuple[tuple[str, type[Any]], ...] = (
    ("entities", Entity),
    ("sources", BatchSource),
    ("request_sources", RequestSource),
    ("feature_views", FeatureView),
    ("aggregation_views", AggregationView),
    ("on_demand_views", OnDemandView),
    ("feature_services", FeatureService),
)
_SKIP_DIRS = {"data", "__pycache__", ".venv", ".ipynb_checkpoints"}


@dataclass
class Repo:
    """Definitions by kind and name, plus the directory relative source paths resolve against."""

    root: Path = field(default_factory=Path.cwd)
    entities: dict[str, Entity] = field(default_factory=dict)
    sources: dict[str, BatchSource] = field(default_factory=dict)
    request_sources: dict[str, RequestSource] = field(default_factory=dict)
    feature_views: dict[str, FeatureView] = field(default_factory=dict)
    aggregation_views: dict[str, AggregationView] = field(default_factory=dict)
    on_demand_views: dict[str, OnDemandView] = field(default_factory=dict)
    feature_services: dict[str, FeatureService] = field(default_factory=dict)

    @classmethod
    def from_objects(cls, objects: Iterable[Any], root: str | Path | None = None) -> Repo:
        """A repo holding `objects` (and the entities and sources they reference)."""
        repo = cls(root=Path(root).resolve() if root else Path.cwd())
        for obj in objects:
            repo.add(obj)
        return repo

    @classmethod
    def load(cls, path: str | Path) -> Repo:
        """Import every .py file under `path` (skipping data/) and collect its definitions."""
        root = Path(path).resolve()
        if not root.is_dir():
            raise RepoError(
                f"feature repo {str(root)!r} is not a directory",
                hint="pass the directory holding feature_store.yaml, e.g. feature_repo/",
            )
        repo = cls(root=root)
        files = sorted(
            p
            for p in root.rglob("*.py")
            if not (set(p.relative_to(root).parts[:-1]) & _SKIP_DIRS)
            and not p.name.startswith(("test_", "_"))
        )
        for file in files:
            module_name = f"_featurelib_repo_{abs(hash(str(file)))}"
            spec = importlib.util.spec_from_file_location(module_name, file)
            assert spec is not None
            assert spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[module_name] = module
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                from featurelib.errors import FeaturelibError

                if isinstance(exc, FeaturelibError):
                    raise
                raise RepoError(
                    f"importing {file.name} failed: {type(exc).__name__}: {exc}",
                    where=str(file),
                    hint="fix the Python error in the definitions file",
                ) from exc
            for value in vars(module).values():
                if any(isinstance(value, t) for _, t in _KINDS):
                    repo.add(value)
        return repo

    def add(self, obj: Any) -> None:
        for attr, kind in _KINDS:
            if isinstance(obj, kind):
                table: dict[str, Any] = getattr(self, attr)
                name: str = obj.name
                existing = table.get(name)
                if existing is not None and existing != obj:
                    raise DuplicateNameError(
                        f"two different {attr.replace('_', ' ')} are named {name!r}",
                        hint="give each definition a unique name",
                    )
                table[name] = obj
                self._add_dependencies(obj)
                return
        raise RepoError(f"{obj!r} is not a featurelib definition")

    def _add_dependencies(self, obj: Any) -> None:
        if isinstance(obj, FeatureView | AggregationView):
            for entity in obj.entities:
                self.add(entity)
            self.add(obj.source)
        elif isinstance(obj, OnDemandView):
            for item in obj.inputs:
                self.add(item)
        elif isinstance(obj, FeatureService):
            for proj in obj.projections:
                self.add(proj.view)

    def objects(self) -> list[Any]:
        return [obj for attr, _ in _KINDS for obj in getattr(self, attr).values()]

    def view(self, name: str) -> FeatureView | AggregationView | OnDemandView:
        for table in (self.feature_views, self.aggregation_views, self.on_demand_views):
            if name in table:
                return table[name]  # type: ignore[return-value]
        known = sorted([*self.feature_views, *self.aggregation_views, *self.on_demand_views])
        raise RepoError(f"no feature view named {name!r}", hint=f"views are: {known}")

    def service(self, name: str) -> FeatureService:
        try:
            return self.feature_services[name]
        except KeyError:
            raise RepoError(
                f"no feature service named {name!r}",
                hint=f"services are: {sorted(self.feature_services)}",
            ) from None
