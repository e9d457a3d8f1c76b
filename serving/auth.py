"""Bearer-token authorization with roles: `score`, `push`, `admin`.

Tokens come from the config (`tokens: {token: [roles]}`) or `$FEATURELIB_SERVE_TOKENS`. A key is
either `sha256:<hex digest of the token>` (preferred: the config then holds no secret, and the
digest itself is not a token) or the plain token. With no tokens configured, auth is off. With
tokens: scoring (OIP infer, model metadata, `/get-online-features`) needs `score`, `/push` needs
`push`, `/admin/*` and `/metrics` need `admin`; health endpoints (`/v2/health/*`, `/v2`) stay
open for probes.

No token, a malformed header or an unknown token -> 401 (UNAUTHENTICATED); a known token
without the role -> 403 (PERMISSION_DENIED). Tokens are compared by digest, so the lookup time
does not depend on how much of a secret matches.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence

from serving.errors import ForbiddenError, UnauthorizedError

_DIGEST_KEY = re.compile(r"sha256:([0-9a-f]{64})")


def token_digest(token: str) -> str:
    """The SHA-256 hex digest of a token (configure it as `sha256:<digest>`).

    >>> token_digest("s3cret")[:12]
    '1ec1c26b50d5'
    """
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Authenticator:
    """Checks `Authorization: Bearer <token>` against the configured tokens and roles."""

    def __init__(self, tokens: Mapping[str, Sequence[str]]) -> None:
        self._roles: dict[str, frozenset[str]] = {}
        for key, roles in tokens.items():
            digest = _DIGEST_KEY.fullmatch(key.strip().lower())
            # A digest key is only ever compared with the digest of a presented token, so
            # knowing the configured digest does not authenticate anyone.
            self._roles[digest.group(1) if digest else token_digest(key)] = frozenset(roles)

    @property
    def enabled(self) -> bool:
        return bool(self._roles)

    def check(self, authorization: str | None, role: str) -> None:
        """Raise UnauthorizedError / ForbiddenError unless the header grants `role`."""
        if not self._roles:
            return
        hint = 'send the header "Authorization: Bearer <token>"'
        if not authorization:
            raise UnauthorizedError("no bearer token given", hint=hint)
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise UnauthorizedError("the Authorization header is not 'Bearer <token>'", hint=hint)
        roles = self._roles.get(token_digest(token.strip()))
        if roles is None:
            raise UnauthorizedError("unknown bearer token", hint="check the token you were issued")
        if role not in roles:
            raise ForbiddenError(
                f"this token lacks the role {role!r} (it has {sorted(roles)})",
                hint=f"use a token granted {role!r} in the serve configuration",
            )
