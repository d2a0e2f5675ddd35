"""The lifespan state: what main.py's lifespan yields, and Starlette hands every request."""

from __future__ import annotations

from typing import TypedDict

from skyhigh.api.tokens import TokenVerifier
from skyhigh.intake.service import Intake
from skyhigh.processing.runtime import Runtime
from skyhigh.realtime.service import RealtimeService


class AppState(TypedDict):
    """Starlette copies this into `scope["state"]` per request (`request.state.runtime`)."""

    runtime: Runtime
    intake: Intake
    verifier: TokenVerifier  # built with the app, not in processing: workers never verify
    realtime: RealtimeService  # its model is None unless REALTIME_ENABLED
