"""Connections to the online Redis: where it is, how long to wait, what to say when it fails.

Which server (`resolve_url`)
    1. the `url` argument, else
    2. the `REDIS_URL` environment variable, else
    3. the repo's embedded server (`EmbeddedRedis.for_repo(repo_root or cwd).ensure_running()`,
       see `featurelib.online.server`: a real redis-server with its data in
       `<repo_root>/data/redis/`, started on first use and reused by later commands).

URLs: `redis://[[user]:password@]host[:port][/db]`, `rediss://...` (TLS; `ssl_cert_reqs`,
`ssl_ca_certs`, `ssl_certfile`, `ssl_keyfile`, ... as query parameters) and
`unix://[[user]:password@]/path/to/redis.sock[?db=N]`. Percent-encode special characters in
passwords. Logs and errors only ever show `describe(url)`, which masks the password.

Client defaults (`connection_options`; precedence: keyword options > URL query parameters >
environment > defaults)
    - one `ConnectionPool` per client, `max_connections=64` (raises when exhausted),
    - `socket_timeout=2 s`, `socket_connect_timeout=1 s`; `FEATURELIB_REDIS_TIMEOUT=<seconds>`
      sets the socket timeout and half of it as the connect timeout,
    - `retry`: 3 retries with exponential backoff (10 ms doubling, capped at 0.5 s) on
      connection errors and timeouts, so a Redis blip costs a few ms instead of an error, while
      a dead Redis is reported within about (1 + 3) x timeout,
    - `health_check_interval=30 s` (a connection idle for longer is PINGed before reuse),
    - binary responses (`decode_responses=False`), `client_name="featurelib"`,
    - `protocol=2` (RESP2): the same reply shapes on every redis-py the project allows (redis-py 8
      would otherwise negotiate RESP3 with `HELLO 3`) and on servers without `HELLO`.

`connect()` PINGs once (unless `verify=False`) so a wrong address or password fails at once with
a `RedisUnavailableError` naming the (redacted) URL and a hint; `unavailable()` turns a later
`redis.RedisError` into the same error for callers that hit Redis mid-request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.connection import parse_url
from redis.retry import Retry

from featurelib.errors import FeaturelibError
from featurelib.online.server import EmbeddedRedis, RedisUnavailableError

__all__ = [
    "RedisUnavailableError",
    "connect",
    "connection_options",
    "default_retry",
    "describe",
    "resolve_url",
    "unavailable",
]

URL_ENV = "REDIS_URL"
TIMEOUT_ENV = "FEATURELIB_REDIS_TIMEOUT"
SOCKET_TIMEOUT = 2.0
MAX_CONNECTIONS = 64
HEALTH_CHECK_INTERVAL = 30
RETRIES = 3

_ARGUMENT, _ENVIRONMENT, _EMBEDDED = "argument", "environment", "embedded"


def connect(
    url: str | None = None,
    *,
    repo_root: Path | None = None,
    verify: bool = True,
    **options: Any,
) -> redis.Redis:
    """A pooled client for `url`, `$REDIS_URL` or the repo's embedded server (in that order).

    `options` are `redis.Connection`/`ConnectionPool` keyword arguments overriding the defaults
    (see the module docstring). With `verify` the server is PINGed once; failures raise
    `RedisUnavailableError`.
    """
    resolved, source = _resolve(url, repo_root)
    pool = redis.ConnectionPool(**connection_options(resolved, **options))
    client = redis.Redis(connection_pool=pool)
    if verify:
        try:
            client.ping()
        except redis.RedisError as exc:
            client.close()
            pool.disconnect()
            raise unavailable(exc, resolved, source=source) from exc
    return client


def resolve_url(url: str | None = None, *, repo_root: Path | None = None) -> str:
    """The URL `connect()` would use (may start the embedded server)."""
    return _resolve(url, repo_root)[0]


def _resolve(url: str | None, repo_root: Path | None) -> tuple[str, str]:
    if url:
        return url, _ARGUMENT
    from_env = os.environ.get(URL_ENV, "").strip()
    if from_env:
        return from_env, _ENVIRONMENT
    embedded = EmbeddedRedis.for_repo(repo_root if repo_root is not None else Path.cwd())
    return embedded.ensure_running(), _EMBEDDED


def default_retry() -> Retry:
    """3 retries, exponential backoff 10 ms .. 0.5 s, on connection errors and timeouts.

    Authentication failures (a `ConnectionError` subclass) are not retried: they cannot heal.
    """
    backoff = ExponentialBackoff(cap=0.5, base=0.01)
    errors = (redis.ConnectionError, redis.TimeoutError)
    try:
        return Retry(backoff, RETRIES, errors, is_retryable=_worth_retrying)
    except TypeError:  # redis-py < 8 has no is_retryable
        return Retry(backoff, RETRIES, errors)


def _worth_retrying(error: Exception) -> bool:
    return not isinstance(error, redis.AuthenticationError)


def connection_options(url: str, **options: Any) -> dict[str, Any]:
    """`ConnectionPool` keyword arguments for `url`: defaults < env < URL query < `options`."""
    try:
        from_url = _parse_url(url)
    except ValueError as exc:
        raise FeaturelibError(
            f"invalid Redis URL: {exc}",
            where=describe(url),
            hint="use redis://[:password@]host:port/db, rediss://... or unix:///path/to/socket",
        ) from exc
    return {**_defaults(), **from_url, **options}


def _defaults() -> dict[str, Any]:
    timeout = _timeout_from_env()
    return {
        "max_connections": MAX_CONNECTIONS,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout / 2,
        "retry": default_retry(),
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "decode_responses": False,
        "protocol": 2,
        "client_name": "featurelib",
    }


def _timeout_from_env() -> float:
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return SOCKET_TIMEOUT
    try:
        timeout = float(raw)
    except ValueError:
        timeout = -1.0
    if not timeout > 0:
        raise FeaturelibError(
            f"{raw!r} is not a positive number of seconds",
            where=TIMEOUT_ENV,
            hint=f"set it to e.g. 2 or 0.5, or unset it for the default ({SOCKET_TIMEOUT:g} s)",
        )
    return timeout


def unavailable(
    error: BaseException, url: str, *, source: str = _ARGUMENT
) -> RedisUnavailableError:
    """The `RedisUnavailableError` for `error` met while talking to `url` (password masked)."""
    password = _password(url)
    detail = str(error) or type(error).__name__
    if password:
        detail = detail.replace(password, "***")
    if isinstance(error, redis.AuthenticationError):
        what = f"Redis refused the credentials: {detail}"
        hint = "check the user name and password in the URL (redis://user:password@host:port/0)"
    elif "SSL" in detail:
        what = f"TLS handshake with Redis failed: {detail}"
        hint = "check the TLS query parameters (ssl_ca_certs=..., ssl_cert_reqs=required|none)"
    else:
        what = f"cannot reach Redis: {detail}"
        hint = _HINTS[source]
    return RedisUnavailableError(what, where=describe(url), hint=hint)


_HINTS = {
    _ARGUMENT: "start Redis at that address or fix the URL",
    _ENVIRONMENT: f"start Redis at that address, fix {URL_ENV}, or unset {URL_ENV} "
    "to use featurelib's embedded server",
    _EMBEDDED: "the embedded server stopped answering; see data/redis/redis.log in the repo, "
    "or set REDIS_URL to another Redis",
}


def describe(url: str) -> str:
    """`url` with its password (in the user info or a `password=` parameter) masked as `***`."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user, colon, _secret = userinfo.partition(":")
        netloc = f"{user}:***@{hostport}" if colon else netloc
    query = "&".join(
        f"{name}=***" if name == "password" else item
        for item in parts.query.split("&")
        if item
        for name in [item.partition("=")[0]]
    )
    shown = f"{parts.scheme}://{netloc}{parts.path}"
    return shown + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")


def _password(url: str) -> str | None:
    """The password in `url` (user info or query), None if it has none."""
    try:
        password = _parse_url(url).get("password")
    except ValueError:
        return None
    return str(password) if password else None


def _parse_url(url: str) -> dict[str, Any]:
    """redis-py's own URL parser (raises ValueError), typed."""
    options: dict[str, Any] = parse_url(url)  # type: ignore[no-untyped-call]
    return options
