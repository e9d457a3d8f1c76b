"""Serving definitions: the Feast registry's after `feast apply` (else the repo's Python files),
loaded once and refreshed in the background when the registry changes.

Requests never parse the registry: they read `LiveDefinitions.repo`, a reference swapped
atomically by the watcher thread when the registry file's modification time or size changes.
Serving plans are cached per (service, definition version), so a changed service compiles
once, on its first request after the swap.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from featurelib.repo import Repo


def _registry_file(root: Path) -> Path | None:
    config = root / "feature_store.yaml"
    if not config.is_file():
        return None
    import yaml

    loaded = yaml.safe_load(config.read_text()) or {}
    registry = loaded.get("registry", "data/registry.db") if isinstance(loaded, dict) else None
    if isinstance(registry, dict):
        registry = registry.get("path")
    if not isinstance(registry, str) or "://" in registry:
        return None
    path = Path(registry)
    return path if path.is_absolute() else root / path


def load_serving_repo(root: Path) -> Repo:
    """Definitions to serve from: the registry's when `feast apply` has run, else the files'."""
    registry = _registry_file(root)
    if registry is not None and registry.exists():
        from featurelib.feast.registry import load_definitions

        return load_definitions(root)
    return Repo.load(root)


class LiveDefinitions:
    """The repo's serving definitions, kept current by a background watcher thread."""

    def __init__(
        self,
        root: str | Path,
        *,
        interval: float = 5.0,
        loader: Callable[[Path], Repo] = load_serving_repo,
        on_error: Callable[[Exception], None] | None = None,
    ) -> None:
        self.root = Path(root).resolve()
        self._loader = loader
        self._on_error = on_error
        self._signature = self._current_signature()
        self.repo = loader(self.root)
        self.reloads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, args=(interval,), name="featurelib-definitions", daemon=True
        )
        self._thread.start()

    def _current_signature(self) -> tuple[float, int] | None:
        registry = _registry_file(self.root)
        if registry is None or not registry.exists():
            return None
        stat = registry.stat()
        return (stat.st_mtime, stat.st_size)

    def _watch(self, interval: float) -> None:
        while not self._stop.wait(interval):
            signature = self._current_signature()
            if signature == self._signature:
                continue
            try:
                repo = self._loader(self.root)
            except Exception as exc:  # keep serving the last good definitions
                if self._on_error:
                    self._on_error(exc)
                continue
            self.repo, self._signature = repo, signature
            self.reloads += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def __enter__(self) -> LiveDefinitions:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()
