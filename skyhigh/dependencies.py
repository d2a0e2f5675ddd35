"""FastAPI dependencies as Annotated aliases (the only skyhigh module that imports FastAPI)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from skyhigh.dispatch import Dispatcher
from skyhigh.runtime import Runtime
from skyhigh.security import InvalidToken, Principal
from skyhigh.settings import Settings
from skyhigh.store import EventStore

bearer_scheme = HTTPBearer(
    auto_error=False,
    description="An API token from API_TOKENS (or a signed JWT when AUTH_MODE=jwt).",
)


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_settings_dep(runtime: RuntimeDep) -> Settings:
    return runtime.settings


def get_store(runtime: RuntimeDep) -> EventStore:
    return runtime.store


def get_dispatcher(runtime: RuntimeDep) -> Dispatcher:
    return runtime.dispatcher


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
StoreDep = Annotated[EventStore, Depends(get_store)]
DispatcherDep = Annotated[Dispatcher, Depends(get_dispatcher)]


def _unauthorized(detail: str, *, token_given: bool) -> HTTPException:
    challenge = 'Bearer error="invalid_token"' if token_given else "Bearer"
    return HTTPException(
        status_code=status.HTTP_401_UNAUTHORIZED,
        detail=detail,
        headers={"WWW-Authenticate": challenge},
    )


def require_token(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> Principal:
    """Accept the request only with a valid `Authorization: Bearer <token>` header."""
    verifier = runtime.verifier
    if credentials is None:
        if verifier.open_access:
            return Principal(subject="dev", method="open")
        raise _unauthorized(
            "missing bearer token: send 'Authorization: Bearer <token>'", token_given=False
        )
    try:
        return verifier.verify(credentials.credentials)
    except InvalidToken as exc:
        raise _unauthorized(str(exc), token_given=True) from None


PrincipalDep = Annotated[Principal, Depends(require_token)]
