"""`featurelib serve`: the scoring service (REST + gRPC) on the repo's definitions.

    featurelib serve --repo feature_repo                       # REST :8080, gRPC :8081
    featurelib serve --config serve.yaml --http-port 9000 --no-grpc
    featurelib serve --now 2013-06-01T12:00:00                 # replay the 2013 demo data

Settings: `serving.config` (YAML keys; flags override the file). Stops cleanly on SIGTERM or
SIGINT (requests in flight finish, the feature log is flushed).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from featurelib.cli import time_arg


def _cmd_serve(args: argparse.Namespace) -> int:
    import sys

    from serving.config import ServeConfig
    from serving.server import ScoringService

    config = ServeConfig.load(
        args.config,
        host=args.host,
        http_port=args.http_port,
        grpc_port=args.grpc_port,
        registry_url=args.registry,
        redis_url=args.redis_url,
        models=args.models.split(",") if args.models else None,
        now=args.now,
        allow_feature_time=True if args.allow_feature_time else None,
    )
    if args.no_grpc:
        from dataclasses import replace

        config = replace(config, grpc_port=None)

    def say(message: str) -> None:
        print(f"featurelib serve: {message}", file=sys.stderr, flush=True)

    with ScoringService.open(args.repo, config, progress=say) as service:
        service.run()
    say("stopped")
    return 0


def register(sub: Any, with_repo: Callable[[Any], Any]) -> None:
    """Add `serve` to the `featurelib` parser."""
    p = with_repo(
        sub.add_parser(
            "serve",
            help="run the scoring service: Open Inference Protocol over REST and gRPC, "
            "Feast-compatible feature endpoints, Prometheus metrics",
        )
    )
    p.add_argument("--host", default=None, help="listen address (default 127.0.0.1)")
    p.add_argument("--http-port", type=int, default=None, help="REST port (default 8080)")
    p.add_argument("--grpc-port", type=int, default=None, help="gRPC port (default 8081)")
    p.add_argument("--no-grpc", action="store_true", help="serve REST only")
    p.add_argument(
        "--registry", default=None, help="model registry URL (default: FEATURELIB_REGISTRY_URL, "
        "else sqlite:///REPO/data/models.db)"
    )  # fmt: skip
    p.add_argument("--redis-url", default=None, help="default: REDIS_URL, else embedded")
    p.add_argument("--config", default=None, help="serve.yaml (see serving.config)")
    p.add_argument("--models", default=None, help="comma-separated models to serve (default: all)")
    p.add_argument(
        "--now",
        type=time_arg,
        default=None,
        help="start the feature clock at this time and let it advance in real time "
        "(replaying historical data such as the 2013 demo)",
    )
    p.add_argument(
        "--allow-feature-time",
        action="store_true",
        help="replay mode: infer requests may set parameters.feature_time (exact only while "
        "the online store holds nothing later than that time)",
    )
    p.set_defaults(func=_cmd_serve)
