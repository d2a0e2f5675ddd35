"""The OpenAI-compatible audio API (`/v1/audio/...`, `/v1/models`) on the durable pipeline.

Each request becomes a `speech` event through the one intake path, and its answer is rendered
from the event's outcome in OpenAI's shapes: `routes` (the handlers), `follow` (awaiting the
outcome over the live-results channel), `formats` (json, text, srt, vtt, verbose_json, SSE),
`errors` (OpenAI's error object).
"""

from __future__ import annotations

PREFIX = "/v1"  # router.py mounts the routes here; skyhigh.api.errors renders errors by it
