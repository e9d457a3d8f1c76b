"""`featurelib demo-serve`: a day of the demo's traffic through the real scoring service."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from featurelib.cli import time_arg
from featurelib.durations import parse_duration


def _cmd_demo_serve(args: argparse.Namespace) -> int:
    from serving.demo import replay_traffic

    def say(message: str) -> None:
        print(f"demo-serve: {message}", file=sys.stderr, flush=True)

    summary = replay_traffic(
        Path(args.repo),
        start=args.start,
        end=args.end,
        step=parse_duration(args.step, where="--step"),
        model=args.model,
        registry_url=args.registry,
        redis_url=args.redis_url,
        grpc_every=args.grpc_every,
        progress=say,
    )
    print("sample predictions (features joined by the service at the step's feature time):")
    for s in summary.samples:
        print(
            f"  {s['transport']:<4} {s['request_id']:<14} {s['carrier']} {s['origin']}->"
            f"{s['dest']} {s['tailnum'] or '-':<7} departs {s['scheduled_departure']:%m-%d %H:%M}"
            f"Z  v{s['model_version']}  P(delay>15min) = {s['prediction']:.3f}"
        )
    figures = {
        "requests": summary.requests,
        "by_transport": summary.by_transport,
        "by_model_version": {str(k): v for k, v in sorted(summary.by_version.items())},
        "latency_ms": {k: round(v, 2) for k, v in summary.latency_ms.items()},
        "logged_rows": summary.logged_rows,
        "batch_compared": summary.batch_compared,
        "batch_max_abs_diff": summary.batch_max_abs_diff,
    }
    print(json.dumps(figures))
    consistent = summary.batch_compared == summary.requests and summary.batch_max_abs_diff <= 1e-9
    return 0 if consistent else 1


def _cmd_demo_reset(args: argparse.Namespace) -> int:
    from serving.demo import reset_demo

    for line in reset_demo(Path(args.repo), redis_url=args.redis_url):
        print(f"demo-reset: {line}")
    return 0


def register(sub: Any, with_repo: Callable[[Any], Any]) -> None:
    """Add `demo-reset` and `demo-serve` to the `featurelib` parser."""
    p = with_repo(
        sub.add_parser(
            "demo-reset",
            help="start the demo from scratch: clear its online store, push log, feature log, "
            "model registry and skew reports (the generated source data is kept)",
        )
    )
    p.add_argument("--redis-url", default=None, help="default: REDIS_URL, else embedded")
    p.set_defaults(func=_cmd_demo_reset)
    p = with_repo(
        sub.add_parser(
            "demo-serve",
            help="replay a window of the demo's flights through a real featurelib serve process "
            "(REST + gRPC), then check its logged predictions against batch scoring",
        )
    )
    p.add_argument(
        "--start", type=time_arg, required=True, help="the store holds events up to here"
    )
    p.add_argument(
        "--end", type=time_arg, required=True, help="replay flights predicted up to here"
    )
    p.add_argument("--step", default="30m", help="feature-time step (default 30m)")
    p.add_argument("--model", default="flight_delay", help="registered model (champion answers)")
    p.add_argument("--grpc-every", type=int, default=2, help="every Nth request goes over gRPC")
    p.add_argument("--registry", default=None, help="model registry URL")
    p.add_argument("--redis-url", default=None, help="default: REDIS_URL, else embedded")
    p.set_defaults(func=_cmd_demo_serve)
