"""The offline property test's strategies, definitions and brute-force reference
(tests/offline/test_pit_properties.py), loaded once for the online tests."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

_NAME = "_pit_properties"


def _load() -> Any:
    if _NAME in sys.modules:
        return sys.modules[_NAME]
    path = Path(__file__).parents[1] / "offline" / "test_pit_properties.py"
    spec = importlib.util.spec_from_file_location(_NAME, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[_NAME] = module
    spec.loader.exec_module(module)
    return module


pit = _load()
