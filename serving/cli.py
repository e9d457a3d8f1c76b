"""`featurelib` commands of the scoring service (registered by `featurelib.cli`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from serving import cli_demo, cli_logs, cli_models, cli_serve


def register(sub: Any, with_repo: Callable[[Any], Any]) -> None:
    """Add train, models, serve, score, score-stream and logs to the `featurelib` parser."""
    for module in (cli_models, cli_serve, cli_logs, cli_demo):
        module.register(sub, with_repo)
