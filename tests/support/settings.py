"""Settings and environment for a test app or server: private data, the bundled tiny.en weights."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from skyhigh.config import Settings

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data"
TOKENS = ("token-alpha-0123456789", "token-bravo-9876543210")
AUTH = {"Authorization": f"Bearer {TOKENS[0]}"}
# /metrics on the shared live server wants this token (an API token is not enough).
METRICS_TOKEN = "metrics-token-0123456789abcdef"


def make_settings(tmp: Path, **overrides: Any) -> Settings:
    """Settings for a test app: temporary store and spool, a private copy of the shipped
    knowledge base, and the small bundled tiny.en weights (tests not about the default model)."""
    values: dict[str, Any] = {
        "api_tokens": ",".join(TOKENS),
        "database_url": f"sqlite:///{tmp / 'events.db'}",
        "spool_dir": tmp / "spool",
        "lancedb_uri": str(copy_knowledge(tmp)),
        "whisper_model": "tiny.en",
        "whisper_engine": "openai-whisper",
        "model_cache_dir": model_cache_dir(),
        "log_level": "INFO",
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def server_env(tmp: Path, **overrides: str) -> dict[str, str]:
    """The same, as environment variables for a server process."""
    env = {
        "API_TOKENS": ",".join(TOKENS),
        "DATABASE_URL": f"sqlite:///{tmp / 'events.db'}",
        "SPOOL_DIR": str(tmp / "spool"),
        "LANCEDB_URI": str(copy_knowledge(tmp)),
        "WHISPER_MODEL": "tiny.en",
        "MODEL_CACHE_DIR": str(model_cache_dir()),
    }
    env.update(overrides)
    return env


def copy_knowledge(tmp: Path) -> Path:
    """Tests may write to the knowledge base; the committed lancedb_data/ stays untouched."""
    dest = tmp / "lancedb_data"
    if not dest.exists():
        shutil.copytree(ROOT / "lancedb_data", dest)
    return dest


def model_cache_dir() -> Path:
    # Converted checkpoints are cached across runs (keyed by checksum), like in production.
    return Path(os.environ.get("SKYHIGH_TEST_MODEL_CACHE", Path.home() / ".cache" / "skyhigh"))
