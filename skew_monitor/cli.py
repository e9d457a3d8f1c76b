"""PLACEHOLDER: being written by a helper session."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def register(sub: Any, with_repo: Callable[[Any], Any]) -> None:
    """Add the skew monitor's commands to the `featurelib` parser."""
