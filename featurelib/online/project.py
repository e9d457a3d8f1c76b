"""The project name that prefixes every online key (`fl:<project>:...`)."""

from __future__ import annotations

from pathlib import Path

from featurelib.errors import RepoError

CONFIG = "feature_store.yaml"


def project_name(root: Path) -> str:
    """`project:` from the repo's feature_store.yaml, else the repo directory's name.

    Examples:
        >>> from pathlib import Path
        >>> project_name(Path("/nonexistent/flights_repo"))
        'flights_repo'
    """
    config = root / CONFIG
    if not config.is_file():
        return root.resolve().name
    import yaml  # type: ignore[import-untyped]

    try:
        loaded = yaml.safe_load(config.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RepoError(
            f"cannot parse {CONFIG}: {exc}",
            where=str(config),
            hint="fix the YAML (e.g. `project: flights` on its own line)",
        ) from exc
    project = loaded.get("project") if isinstance(loaded, dict) else None
    if project is None or str(project).strip() == "":
        return root.resolve().name
    name = str(project).strip()
    if any(c in name for c in ":{}") or any(c.isspace() for c in name):
        raise RepoError(
            f"project name {name!r} cannot be used in Redis keys",
            where=str(config),
            hint="use letters, digits, '_' or '-' (no ':', '{', '}' or spaces)",
        )
    return name
