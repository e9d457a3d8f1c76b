"""Expose a featurelib repo's definitions to `feast apply` / `feast plan`.

Feast discovers objects by importing every `.py` file of the repo and collecting module globals
that are Feast objects (feast/repo_operations.py, `parse_repo`); featurelib's DSL objects in
`definitions.py` are not Feast objects, so Feast ignores them. A small repo file turns them into
Feast objects:

    # feature_repo/_feast_objects.py
    from featurelib.feast.expose import feast_objects
    globals().update(feast_objects(__file__))

The leading underscore keeps `fl.Repo.load` (which skips `_*.py` files) from importing it, so
loading definitions never imports Feast. Should it be imported by `Repo.load` anyway (renamed
file), the nested load returns nothing instead of recursing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from featurelib.repo import Repo

_LOADING: set[Path] = set()


def feast_objects(repo_file: str | Path) -> dict[str, Any]:
    """Module globals (`feast_{kind}__{name}` -> Feast object) for the repo holding `repo_file`."""
    root = Path(repo_file).resolve().parent
    if root in _LOADING:
        return {}
    _LOADING.add(root)
    try:
        repo = Repo.load(root)
    finally:
        _LOADING.discard(root)
    from featurelib.feast.convert import to_feast

    return to_feast(repo).as_globals()
