"""`featurelib train` and `featurelib models list|show|promote|rollback|history`."""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from serving.errors import RegistryError


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _actor() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user database entry (containers): still record something
        return "unknown"


def _open(args: argparse.Namespace) -> Any:
    from serving.registry import ModelRegistry

    return ModelRegistry.open(args.registry, repo_root=Path(args.repo).resolve())


def _with_registry(
    handler: Callable[[argparse.Namespace, Any], int],
) -> Callable[[argparse.Namespace], int]:
    """A command handler given an open registry, closed (SQLite WAL checkpointed) after."""

    def run(args: argparse.Namespace) -> int:
        with _open(args) as registry:
            return handler(args, registry)

    return run


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers], *[["-" if v is None else str(v) for v in r] for r in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def _metric(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _gates(args: argparse.Namespace) -> Any:
    from serving.gates import GateConfig, parse_threshold

    regressions = {}
    for text in args.max_regression or []:
        metric, _, amount = text.partition("=")
        try:
            regressions[metric.strip()] = float(amount)
        except ValueError:
            raise RegistryError(
                f"cannot read --max-regression {text!r}", hint="write METRIC=AMOUNT, e.g. auc=0.01"
            ) from None
    return GateConfig(
        metric_thresholds=dict(parse_threshold(t) for t in args.min_metric or []),
        max_regression=regressions,
        check_signature=not args.no_signature_check,
        repo_root=Path(args.repo).resolve(),
        max_p99_ms=None if args.max_p99_ms <= 0 else args.max_p99_ms,
    )


def _cmd_train(args: argparse.Namespace, registry: Any) -> int:
    import polars as pl

    from serving.train import train

    frame = pl.read_parquet(args.training_set) if args.training_set else None
    if frame is None and not args.spine:
        raise RegistryError(
            "nothing to train on", hint="pass --spine data/spine.parquet or --training-set FILE"
        )
    result = train(
        args.repo,
        args.service,
        args.spine,
        args.label,
        args.model,
        split=args.split,
        training_frame=frame,
        registry=registry,
        champion=args.champion,
        challenger=args.challenger,
        gates=_gates(args) if (args.champion or args.challenger) else None,
        actor=args.actor,
        progress=_log,
    )
    rows = [
        [flavor, mv.version, *(_metric(mv.metrics.get(m)) for m in _SHOWN_METRICS)]
        for flavor, mv in result.versions.items()
    ]
    _table(["flavor", "version", *_SHOWN_METRICS], rows)
    _log(
        f"trained {result.model_name} on {result.train_rows:,} rows, evaluated on "
        f"{result.eval_rows:,} rows from {result.split_time} in {result.seconds:.1f}s"
    )
    return 0


_SHOWN_METRICS = ("auc", "log_loss", "accuracy", "brier")


def _cmd_list(args: argparse.Namespace, registry: Any) -> int:
    models = registry.list_models()
    if args.json:
        print(json.dumps([m.to_dict() for m in models], indent=2))
        return 0
    if not models:
        _log(f"no models in {registry.url}: register one with `featurelib train`")
        return 0
    rows = []
    for m in models:
        aliases = ", ".join(f"@{a}={v}" for a, v in m.aliases.items())
        rows.append([m.name, m.version_count, m.latest_version, aliases or "-"])
    _table(["model", "versions", "latest", "aliases"], rows)
    return 0


def _cmd_show(args: argparse.Namespace, registry: Any) -> int:
    from serving.registry import split_model_ref

    name, ref = split_model_ref(args.model)
    if ref is None:
        return _show_versions(registry, name, args.json)
    mv = registry.resolve(name, ref)
    aliases = [a for a, v in registry.aliases(name).items() if v == mv.version]
    attachments = registry.attachment_keys(name, mv.version)
    if args.json:
        print(
            json.dumps({**mv.to_dict(), "aliases": aliases, "attachments": attachments}, indent=2)
        )
        return 0
    fields = [
        ("model", f"{mv.name} version {mv.version}"),
        ("aliases", ", ".join(f"@{a}" for a in aliases) or "-"),
        ("flavor", mv.flavor),
        ("signature", f"{mv.service} @ {mv.service_version} ({len(mv.feature_names)} features)"),
        ("created", f"{mv.created_at.isoformat(timespec='seconds')} by {mv.created_by}"),
        ("code version", mv.code_version),
        ("fingerprint", mv.fingerprint),
        ("artifact", f"sha256 {mv.artifact_sha256} ({mv.artifact_size:,} bytes)"),
        ("attachments", ", ".join(attachments) or "-"),
        ("description", mv.description or "-"),
    ]
    fields += [(f"metric {k}", f"{v:.6g}") for k, v in mv.metrics.items()]
    fields += [(f"param {k}", json.dumps(v)) for k, v in mv.params.items()]
    _table(["field", "value"], fields)
    return 0


def _show_versions(registry: Any, name: str, as_json: bool) -> int:
    versions = registry.versions(name)
    aliases = registry.aliases(name)
    if as_json:
        print(json.dumps({"versions": [v.to_dict() for v in versions], "aliases": aliases}))
        return 0
    by_version: dict[int, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(version, []).append(f"@{alias}")
    rows = [
        [
            v.version,
            v.flavor,
            ", ".join(by_version.get(v.version, [])) or "-",
            *(_metric(v.metrics.get(m)) for m in _SHOWN_METRICS),
            v.created_at.isoformat(timespec="seconds"),
        ]
        for v in versions
    ]
    _table(["version", "flavor", "aliases", *_SHOWN_METRICS, "created"], rows)
    return 0


def _cmd_promote(args: argparse.Namespace, registry: Any) -> int:
    gates = _gates(args)
    move = registry.set_alias(
        args.model,
        args.alias,
        args.version,
        actor=args.actor,
        reason=args.reason,
        gates=gates,
        force=args.force,
    )
    print(
        f"{args.model}@{move.alias}: {move.from_version or '-'} -> {move.to_version}"
        + (" (forced)" if move.forced else " (all gates passed)")
    )
    return 0


def _cmd_rollback(args: argparse.Namespace, registry: Any) -> int:
    move = registry.rollback(args.model, args.alias, actor=args.actor, reason=args.reason)
    print(f"{args.model}@{move.alias}: {move.from_version} -> {move.to_version} (rolled back)")
    return 0


def _cmd_history(args: argparse.Namespace, registry: Any) -> int:
    moves = registry.history(args.model, args.alias)
    if args.json:
        print(json.dumps([m.to_dict() for m in moves], indent=2))
        return 0
    rows = [
        [
            m.id,
            m.at.isoformat(timespec="seconds"),
            f"@{m.alias}",
            m.from_version,
            m.to_version,
            m.actor,
            ("FORCED " if m.forced else "") + (m.reason or ""),
        ]
        for m in moves
    ]
    _table(["#", "at", "alias", "from", "to", "actor", "reason"], rows)
    return 0


def _common(p: argparse.ArgumentParser, with_repo: Callable[[Any], Any]) -> argparse.ArgumentParser:
    p.add_argument(
        "--registry",
        default=None,
        help="SQLAlchemy URL (default: FEATURELIB_REGISTRY_URL, else sqlite:///REPO/data/models.db)",
    )
    result: argparse.ArgumentParser = with_repo(p)
    return result


def _gate_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--min-metric",
        action="append",
        metavar="METRIC>=VALUE",
        help="metric threshold gate, repeatable (e.g. auc>=0.6, log_loss<=0.5)",
    )
    p.add_argument(
        "--max-regression",
        action="append",
        metavar="METRIC=AMOUNT",
        help="refuse if worse than the alias's current version by more than AMOUNT",
    )
    p.add_argument("--max-p99-ms", type=float, default=250.0, help="warm-up p99 limit (0: off)")
    p.add_argument("--no-signature-check", action="store_true", help="skip the signature gate")
    p.add_argument("--actor", default=_actor(), help="who is acting (default: the OS user)")


def register(sub: Any, with_repo: Callable[[Any], Any]) -> None:
    """Add `train` and `models ...` to the `featurelib` parser."""
    p = _common(
        sub.add_parser("train", help="train XGBoost + a baseline and register both"), with_repo
    )
    p.add_argument("--service", required=True, help="feature service the model consumes")
    p.add_argument("--spine", help="Parquet spine: keys, timestamps, request fields, label")
    p.add_argument("--label", required=True, help="label column (bool or 0/1)")
    p.add_argument("--model", required=True, help="registered model name")
    p.add_argument("--training-set", help="an existing training set Parquet (skips the build)")
    p.add_argument("--split", type=float, default=0.8, help="fraction of earliest rows to train on")
    p.add_argument("--champion", choices=("xgboost", "sklearn"), help="flavor to make @champion")
    p.add_argument("--challenger", choices=("xgboost", "sklearn"), help="flavor for @challenger")
    _gate_options(p)
    p.set_defaults(func=_with_registry(_cmd_train))

    models = sub.add_parser("models", help="the model registry: list, show, promote, rollback")
    msub = models.add_subparsers(dest="models_command", required=True)
    p = _common(msub.add_parser("list", help="registered models and their aliases"), with_repo)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_with_registry(_cmd_list))
    p = _common(msub.add_parser("show", help="a model's versions, or one version"), with_repo)
    p.add_argument("model", help="NAME (all versions) or NAME@REF (REF: version, alias, latest)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_with_registry(_cmd_show))
    p = _common(msub.add_parser("promote", help="point an alias at a version (gated)"), with_repo)
    p.add_argument("model")
    p.add_argument("version", type=int)
    p.add_argument("--alias", default="champion")
    p.add_argument("--force", action="store_true", help="skip the gates (recorded in history)")
    p.add_argument("--reason", default="", help="why (kept in the history)")
    _gate_options(p)
    p.set_defaults(func=_with_registry(_cmd_promote))
    p = _common(msub.add_parser("rollback", help="move an alias back one move"), with_repo)
    p.add_argument("model")
    p.add_argument("--alias", default="champion")
    p.add_argument("--reason", default="")
    p.add_argument("--actor", default=_actor())
    p.set_defaults(func=_with_registry(_cmd_rollback))
    p = _common(msub.add_parser("history", help="every alias move of a model"), with_repo)
    p.add_argument("model")
    p.add_argument("--alias", default=None, help="only this alias")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_with_registry(_cmd_history))
