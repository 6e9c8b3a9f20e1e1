"""Authentication and authorization as one FastAPI security dependency.

Routes declare what they need with ``Security(caller, scopes=[Scope.READ.value])``; the
dependency answers 401 (no or unknown bearer token, with ``WWW-Authenticate``) or 403 (a
known key without the scope), and otherwise hands the route the :class:`Caller`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer, SecurityScopes

from api.keys import Keyring, Scope
from api.problems import ApiProblem, ProblemKind

REALM = "refunds"
# The name recorded for what is done without authentication (REFUNDS_API_INSECURE_NO_AUTH).
INSECURE_CALLER = "insecure-no-auth"

bearer = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKey",
    description=(
        "An API key as a bearer token. Scopes: refunds:read (status, list), refunds:write "
        "(start), refunds:operate (cancel, resolve)."
    ),
)


@dataclass(frozen=True)
class Caller:
    """Who is calling: the key's name (recorded on what it does) and its scopes."""

    name: str
    scopes: frozenset[Scope]
    # The key's default outcome-event endpoint (docs/events.md).
    notify_url: str | None = None


@dataclass(frozen=True)
class AuthConfig:
    keyring: Keyring
    insecure_no_auth: bool = False


def _auth_config(request: Request) -> AuthConfig:
    config = request.app.state.auth
    assert isinstance(config, AuthConfig)
    return config


def caller(
    security_scopes: SecurityScopes,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    config = _auth_config(request)
    if config.insecure_no_auth:
        return Caller(INSECURE_CALLER, frozenset(Scope))
    wanted = " ".join(security_scopes.scopes)
    key = config.keyring.find(credentials.credentials) if credentials is not None else None
    if key is None:
        challenge = f'Bearer realm="{REALM}"'
        if credentials is not None:
            challenge += ', error="invalid_token"'
        raise ApiProblem(
            ProblemKind.UNAUTHORIZED,
            "send an API key as `Authorization: Bearer <token>`"
            if credentials is None
            else "the bearer token is not a known API key",
            headers={"WWW-Authenticate": challenge},
        )
    missing = [scope for scope in security_scopes.scopes if Scope(scope) not in key.scopes]
    if missing:
        raise ApiProblem(
            ProblemKind.FORBIDDEN,
            f"API key {key.name!r} lacks the scope {', '.join(missing)}",
            headers={
                "WWW-Authenticate": (
                    f'Bearer realm="{REALM}", error="insufficient_scope", scope="{wanted}"'
                )
            },
        )
    return Caller(key.name, key.scopes, key.notify_url)
