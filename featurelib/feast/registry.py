"""featurelib definitions read back from the Feast registry (the source of truth for serving).

After `feast apply` every registered object carries its featurelib spec in the
`featurelib.spec` tag (convert.py); this module rebuilds an `fl.Repo` from those tags, so
featurelib serves exactly what was applied, not whatever the Python files say now.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from featurelib.errors import RepoError, SpecError
from featurelib.feast.types import SPEC
from featurelib.repo import Repo
from featurelib.spec import loads


@lru_cache(maxsize=4096)
def definition(spec: str) -> Any:
    """`fl.loads(spec)`, cached: definitions are immutable, so one object per spec text."""
    return loads(spec)


def definition_of(obj: Any) -> Any | None:
    """The featurelib definition a Feast object was registered from (None if it has none)."""
    spec = (getattr(obj, "tags", None) or {}).get(SPEC)
    if spec is None:
        return None
    try:
        return definition(spec)
    except SpecError as exc:
        raise SpecError(
            f"the {SPEC} tag of Feast object {getattr(obj, 'name', obj)!r} is unreadable: "
            f"{exc.what}",
            hint="re-run `feast apply` with this featurelib version",
        ) from exc


def registry_objects(registry: Any, project: str, *, allow_cache: bool = True) -> list[Any]:
    """Every Feast object of `project` that can carry a featurelib spec."""
    return [
        *registry.list_entities(project, allow_cache=allow_cache),
        *registry.list_data_sources(project, allow_cache=allow_cache),
        *registry.list_feature_views(project, allow_cache=allow_cache),
        *registry.list_on_demand_feature_views(project, allow_cache=allow_cache),
        *registry.list_feature_services(project, allow_cache=allow_cache),
    ]


def repo_from_registry(
    registry: Any, project: str, root: str | Path, *, allow_cache: bool = True
) -> Repo:
    """The featurelib definitions registered in `project` (objects without a spec are skipped)."""
    found = [definition_of(o) for o in registry_objects(registry, project, allow_cache=allow_cache)]
    return Repo.from_objects([d for d in found if d is not None], root=root)


def _store(repo_path: Path) -> Any:
    if not (repo_path / "feature_store.yaml").is_file():
        raise RepoError(
            f"{repo_path} has no feature_store.yaml",
            hint="pass the Feast repo directory, e.g. feature_repo/",
        )
    from feast import FeatureStore

    return FeatureStore(repo_path=str(repo_path))


def load_repo_from_registry(repo_path: str | Path) -> Repo:
    """The definitions `feast apply` registered for the Feast repo at `repo_path`.

    Raises RepoError when the registry holds no featurelib definitions (not applied yet).
    """
    root = Path(repo_path).resolve()
    store = _store(root)
    repo = repo_from_registry(store.registry, store.project, root, allow_cache=False)
    if not repo.objects():
        raise RepoError(
            f"the Feast registry of {root} holds no featurelib definitions",
            where=str(root / "feature_store.yaml"),
            hint=f"run `feast apply` in {root} first",
        )
    return repo


def registry_exists(repo_path: Path) -> bool:
    """Whether the repo's registry may hold definitions (a file registry must exist)."""
    import yaml

    config = yaml.safe_load((repo_path / "feature_store.yaml").read_text()) or {}
    registry = config.get("registry", "data/registry.db")
    if isinstance(registry, dict):
        if registry.get("registry_type", "file") != "file":
            return True  # SQL and remote registries: ask them
        registry = registry.get("path", "data/registry.db")
    path = Path(str(registry))
    if "://" in str(registry):
        return True
    return (path if path.is_absolute() else repo_path / path).exists()


def load_definitions(repo_path: str | Path) -> Repo:
    """The registry's definitions after `feast apply`; the repo's Python files before it."""
    root = Path(repo_path).resolve()
    if (root / "feature_store.yaml").is_file() and registry_exists(root):
        store = _store(root)
        repo = repo_from_registry(store.registry, store.project, root, allow_cache=False)
        if repo.objects():
            return repo
    return Repo.load(root)
