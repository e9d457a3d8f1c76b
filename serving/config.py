"""Configuration of `featurelib serve`: a YAML file (`--config serve.yaml`) plus CLI flags.

    host: 127.0.0.1              # listen address of both transports
    http_port: 8080              # REST (Open Inference Protocol + Feast endpoints + /metrics)
    grpc_port: 8081              # gRPC (inference.GRPCInferenceService); null disables it
    models: [flight_delay_model] # models to serve (default: every registered model whose
                                 # feature service exists in the repo)
    routing:                     # champion/challenger split (per model under `per_model`)
      champion: champion         # alias answering by default
      challenger: challenger     # alias receiving `share` of the entity keys (if it exists)
      share: 0.1                 # fraction of entity keys routed to the challenger
      per_model: {other_model: {share: 0.5}}
    shadow:                      # models scored off the response path; never in the response
      refs: [{model: flight_delay_model, ref: "3"}]  # ref: version number or alias
      sample_rate: 1.0           # fraction of requests shadowed (by request, at random)
      max_concurrent: 4          # shadow scorings in flight; more are dropped (and counted)
    deadline_s: 1.0              # per-request online-store deadline -> 503 (or defaults)
    on_store_unavailable: error  # error (503) | defaults (serve `default_values`, null others)
    default_values: {temp: 15.0} # feature -> value served when the store is unavailable
    extra_columns: ignore        # input columns the service does not use: ignore | reject
    max_body_bytes: 1048576      # larger request bodies -> 413
    max_rows: 10000              # more rows in one request -> 413
    tokens: {"sha256:<hex digest>" or <token>: [score, push, admin]}  # or FEATURELIB_SERVE_TOKENS
    log_sample_rate: 1.0         # fraction of requests written to the feature log
    log_flush_interval_s: 10.0   # in-process flush of the log buffer to Parquet; null: leave it
                                 # to `featurelib logs flush` (e.g. a sidecar or cron)
    reload_interval_s: 1.0       # registry polling period (hot reload of aliases and versions)
    definitions_interval_s: 5.0  # feature registry polling period
    threads: 16                  # gRPC worker threads (REST uses the event loop's thread pool)
    allow_feature_time: false    # replay mode: an infer request may set parameters.feature_time
                                 # (the time its features are read at; see ScoringCore.infer)

Precedence: CLI flags > YAML file > defaults. Unknown keys are refused with the list of known
ones, so a typo never silently falls back to a default.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from serving.errors import ServeConfigError

TOKENS_ENV = "FEATURELIB_SERVE_TOKENS"
ROLES = ("score", "push", "admin")


@dataclass(frozen=True)
class RoutingConfig:
    """Which aliases answer and how the entity keys are split between them."""

    champion: str = "champion"
    challenger: str = "challenger"
    share: float = 0.0


@dataclass(frozen=True)
class ShadowRef:
    """A model version (number or alias) scored in the shadow of `model`'s requests."""

    model: str
    ref: str


@dataclass(frozen=True)
class ShadowConfig:
    """Shadow scoring: which versions, how often, how many at once."""

    refs: tuple[ShadowRef, ...] = ()
    sample_rate: float = 1.0
    max_concurrent: int = 4


@dataclass(frozen=True)
class ServeConfig:
    """Everything `featurelib serve` needs besides the repo (see the module docstring)."""

    host: str = "127.0.0.1"
    http_port: int = 8080
    grpc_port: int | None = 8081
    registry_url: str | None = None
    redis_url: str | None = None
    models: tuple[str, ...] = ()
    routing: RoutingConfig = RoutingConfig()
    routing_per_model: Mapping[str, RoutingConfig] = field(default_factory=dict)
    shadow: ShadowConfig = ShadowConfig()
    deadline_s: float = 1.0
    on_store_unavailable: str = "error"
    default_values: Mapping[str, Any] = field(default_factory=dict)
    extra_columns: str = "ignore"
    max_body_bytes: int = 1 << 20
    max_rows: int = 10_000
    tokens: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    log_sample_rate: float = 1.0
    log_flush_interval_s: float | None = 10.0
    reload_interval_s: float = 1.0
    definitions_interval_s: float = 5.0
    threads: int = 16
    now: datetime | None = None
    allow_feature_time: bool = False

    def __post_init__(self) -> None:
        fraction, positive = "a fraction in [0, 1]", "a positive number"
        checks: list[tuple[bool, str, object, str]] = [
            (self.deadline_s > 0, "deadline_s", self.deadline_s, positive),
            (
                self.on_store_unavailable in ("error", "defaults"),
                "on_store_unavailable",
                self.on_store_unavailable,
                "error or defaults",
            ),
            (
                self.extra_columns in ("ignore", "reject"),
                "extra_columns",
                self.extra_columns,
                "ignore or reject",
            ),
            (self.max_body_bytes > 0, "max_body_bytes", self.max_body_bytes, positive),
            (self.max_rows > 0, "max_rows", self.max_rows, positive),
            (0 <= self.log_sample_rate <= 1, "log_sample_rate", self.log_sample_rate, fraction),
            (
                0 <= self.shadow.sample_rate <= 1,
                "shadow.sample_rate",
                self.shadow.sample_rate,
                fraction,
            ),
            (
                self.shadow.max_concurrent > 0,
                "shadow.max_concurrent",
                self.shadow.max_concurrent,
                positive,
            ),
            (self.reload_interval_s > 0, "reload_interval_s", self.reload_interval_s, positive),
            (self.threads > 0, "threads", self.threads, positive),
        ]
        for model, routing in [("", self.routing), *self.routing_per_model.items()]:
            name = f"routing.per_model.{model}.share" if model else "routing.share"
            checks.append((0 <= routing.share <= 1, name, routing.share, fraction))
        for ok, name, value, expected in checks:
            if not ok:
                raise ServeConfigError(
                    f"{name} = {value!r} is invalid: expected {expected}",
                    where="serve configuration",
                    hint="fix the value in the YAML file or on the command line",
                )
        for token, roles in self.tokens.items():
            unknown = [r for r in roles if r not in ROLES]
            if unknown:
                raise ServeConfigError(
                    f"token {_mask(token)} has unknown roles {unknown}",
                    where="serve configuration: tokens",
                    hint=f"roles are {list(ROLES)}",
                )

    def routing_for(self, model: str) -> RoutingConfig:
        return self.routing_per_model.get(model, self.routing)

    @staticmethod
    def load(path: str | Path | None = None, **overrides: Any) -> ServeConfig:
        """Defaults < YAML file at `path` < `overrides` (None values are ignored) < tokens from
        `$FEATURELIB_SERVE_TOKENS` (JSON `{token: [roles]}`) when the file names none."""
        raw: dict[str, Any] = {}
        where = "serve configuration"
        if path is not None:
            where = str(path)
            raw = _read_yaml(Path(path))
        raw.update({k: v for k, v in overrides.items() if v is not None})
        if not raw.get("tokens") and os.environ.get(TOKENS_ENV, "").strip():
            raw["tokens"] = _tokens_from_env(os.environ[TOKENS_ENV])
        return _build(raw, where)


def _mask(token: str) -> str:
    return f"{token[:4]}…" if len(token) > 4 else "…"


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    if not path.is_file():
        raise ServeConfigError(f"{path} does not exist", hint="pass --config with a YAML file")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ServeConfigError(f"not valid YAML: {exc}", where=str(path)) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ServeConfigError("expected a mapping of settings at the top level", where=str(path))
    return loaded


def _tokens_from_env(text: str) -> dict[str, list[str]]:
    try:
        tokens = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ServeConfigError(
            f"not valid JSON: {exc}",
            where=TOKENS_ENV,
            hint='set it to e.g. {"<token>": ["score", "push"]}',
        ) from None
    if not isinstance(tokens, dict):
        raise ServeConfigError("expected a JSON object {token: [roles]}", where=TOKENS_ENV)
    return tokens


_SCALARS = {f.name for f in fields(ServeConfig)} - {
    "routing",
    "routing_per_model",
    "shadow",
    "tokens",
    "models",
    "default_values",
}


def _build(raw: dict[str, Any], where: str) -> ServeConfig:
    known = {f.name for f in fields(ServeConfig)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ServeConfigError(
            f"unknown settings {unknown}", where=where, hint=f"known settings: {sorted(known)}"
        )
    kwargs: dict[str, Any] = {k: v for k, v in raw.items() if k in _SCALARS}
    try:
        if "models" in raw:
            models = raw["models"]
            kwargs["models"] = tuple([models] if isinstance(models, str) else models or ())
        if "routing" in raw:
            routing = dict(raw["routing"] or {})
            per_model = routing.pop("per_model", None) or {}
            kwargs["routing"] = RoutingConfig(**routing)
            kwargs["routing_per_model"] = {
                name: replace(kwargs["routing"], **(values or {}))
                for name, values in per_model.items()
            }
        if "shadow" in raw:
            shadow = dict(raw["shadow"] or {})
            refs = tuple(
                ShadowRef(str(r["model"]), str(r["ref"])) for r in shadow.pop("refs", None) or ()
            )
            kwargs["shadow"] = ShadowConfig(refs=refs, **shadow)
        if "tokens" in raw:
            kwargs["tokens"] = {
                str(token): tuple([roles] if isinstance(roles, str) else roles)
                for token, roles in (raw["tokens"] or {}).items()
            }
        if "default_values" in raw:
            kwargs["default_values"] = dict(raw["default_values"] or {})
        return ServeConfig(**kwargs)
    except (TypeError, KeyError, AttributeError, ValueError) as exc:
        raise ServeConfigError(
            f"invalid settings: {exc}",
            where=where,
            hint="see `featurelib serve --help` and the serving.config module documentation",
        ) from None
