"""Every setting of the service, read from the environment and `.env` (pydantic-settings).

Settings are grouped by the component that owns them (auth, intake, processing, store,
knowledge, speech, webhooks, observability). `Settings` inherits every group, so each
environment variable keeps its flat, documented name (`WHISPER_MODEL`, not
`SPEECH__WHISPER_MODEL`); components receive only their group (`settings.speech`), so a
component's signature says which settings it reads, as speaches hands its Whisper executor only
the Whisper config.
"""

from __future__ import annotations

from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from skyhigh.secret_strength import GENERATE_32, GENERATE_48, secret_problem

MiB = 1024 * 1024
# RFC 7518 3.2: an HS256 key must be at least as long as the hash (256 bits).
MIN_JWT_SECRET_BYTES = 32
# Estimated bits (skyhigh.secret_strength): a JWT secret signs `admin` tokens offline, so it
# must resist offline guessing; API and metrics tokens are checked online, at request rate.
MIN_JWT_SECRET_BITS = 128
MIN_TOKEN_BITS = 64


def _split_csv(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class AuthSettings(BaseModel):
    """Who may call the API (skyhigh.api.tokens)."""

    api_tokens: Annotated[list[SecretStr], NoDecode] = Field(default_factory=list)
    auth_mode: Literal["token", "jwt"] = "token"
    jwt_secret: SecretStr | None = None
    jwt_public_key: SecretStr | None = None
    jwt_algorithms: Annotated[list[str], NoDecode] = Field(default_factory=lambda: ["HS256"])
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    allow_insecure_dev_mode: bool = False

    _split_auth_lists = field_validator("api_tokens", "jwt_algorithms", mode="before")(_split_csv)

    def token_values(self) -> list[str]:
        return [token.get_secret_value() for token in self.api_tokens]

    def validate_auth(self) -> None:
        """Refuse to run unprotected unless development mode was asked for explicitly, and
        refuse JWT settings that cannot be safe (whatever the mode)."""
        if self.auth_mode == "jwt":
            self._validate_jwt()
        if self.allow_insecure_dev_mode:
            return
        if self.auth_mode == "jwt":
            if self.jwt_secret is None and self.jwt_public_key is None:
                raise ValueError("AUTH_MODE=jwt needs JWT_SECRET or JWT_PUBLIC_KEY")
            return
        tokens = self.token_values()
        if not tokens:
            raise ValueError(
                "API_TOKENS is empty: set at least one token (or ALLOW_INSECURE_DEV_MODE=true "
                "for local development)"
            )
        for token in tokens:
            problem = secret_problem("API_TOKENS", token, min_bits=MIN_TOKEN_BITS, how=GENERATE_32)
            if problem is not None:
                raise ValueError(problem)

    def _validate_jwt(self) -> None:
        # A misconfiguration here is a forgery risk, so it stops the start. Whether the key
        # fits each algorithm is checked when the verifier loads it (skyhigh.api.tokens).
        algorithms = [name.strip() for name in self.jwt_algorithms]
        if not algorithms:
            raise ValueError(
                "JWT_ALGORITHMS is empty: name the algorithm(s) your issuer signs with"
            )
        if any(name.lower() == "none" for name in algorithms):
            raise ValueError("JWT_ALGORITHMS must not contain 'none' (unsigned tokens)")
        hmac_algorithms = [name for name in algorithms if name.upper().startswith("HS")]
        if self.jwt_secret is not None and self.jwt_public_key is not None:
            raise ValueError("set JWT_SECRET (HS*) or JWT_PUBLIC_KEY (RS*/PS*/ES*/EdDSA), not both")
        if self.jwt_public_key is not None and hmac_algorithms:
            raise ValueError(
                f"JWT_ALGORITHMS has {', '.join(hmac_algorithms)} with JWT_PUBLIC_KEY: anyone "
                "holding the public key could sign tokens; list only RS*/PS*/ES*/EdDSA"
            )
        if self.jwt_secret is not None:
            others = [name for name in algorithms if name not in hmac_algorithms]
            if others:
                raise ValueError(
                    f"JWT_ALGORITHMS has {', '.join(others)} with JWT_SECRET; a shared secret "
                    "works with HS256/HS384/HS512 only (use JWT_PUBLIC_KEY for the others)"
                )
            secret = self.jwt_secret.get_secret_value()
            if len(secret.encode()) < MIN_JWT_SECRET_BYTES:
                raise ValueError(
                    f"JWT_SECRET is shorter than {MIN_JWT_SECRET_BYTES} bytes; generate one with "
                    f"{GENERATE_48}"
                )
            problem = secret_problem(
                "JWT_SECRET", secret, min_bits=MIN_JWT_SECRET_BITS, how=GENERATE_48
            )
            if problem is not None:
                raise ValueError(problem)


class IntakeSettings(BaseModel):
    """What clients may send, checked before a 202 (skyhigh.intake, the body limit)."""

    max_body_bytes: int = 36 * MiB
    # Only an audio event (base64 audio in JSON) may use MAX_BODY_BYTES; any other JSON body is
    # refused past this, before it is parsed (skyhigh.api.json_body).
    max_json_body_bytes: int = Field(default=1 * MiB, ge=1024)
    # Values (objects, arrays, strings, numbers...) in one JSON body: bounds parsing and the
    # number of validation errors a body can cause. The largest valid event holds ~1,700.
    max_json_values: int = Field(default=4_096, ge=64)
    # Request head (request line + headers): checked by the server protocol while it arrives
    # (skyhigh.api.http_server) and again by the app; 431 past either.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    max_header_count: int = Field(default=100, ge=8)
    max_pending_events: int = 1000
    retry_after_s: int = 5
    max_audio_bytes: int = 25 * MiB
    audio_url_allowed_hosts: Annotated[list[str], NoDecode] = Field(default_factory=list)
    audio_url_timeout_s: float = 30.0
    audio_url_allow_private: bool = False
    # Per principal (skyhigh.intake.quotas), 0 = off: requests of any kind per minute, and
    # minutes of audio transcribed per hour (new speech events get 429 once used up).
    rate_limit_per_minute: int = Field(default=0, ge=0)
    audio_minutes_per_hour: float = Field(default=0.0, ge=0)
    # --- what one principal or one connection may hold (README "Connection and fairness
    # limits") ---
    # Unfinished events per principal (429 past it); unset: a quarter of MAX_PENDING_EVENTS.
    max_pending_per_principal: int | None = Field(default=None, ge=1)
    # Live streams (SSE + WebSocket) open at once per principal, per API process; 429 past it.
    max_streams_per_principal: int = Field(default=32, ge=1)
    # A request head must arrive complete within this of the wait's start (a new or idle
    # keep-alive connection); a body may pause at most this long. 408 and close past either
    # (skyhigh.api.http_server).
    request_head_timeout_s: float = Field(default=15.0, gt=0)
    request_body_timeout_s: float = Field(default=15.0, gt=0)

    _split_hosts = field_validator("audio_url_allowed_hosts", mode="before")(_split_csv)

    @property
    def pending_per_principal(self) -> int:
        if self.max_pending_per_principal is not None:
            return self.max_pending_per_principal
        return max(1, self.max_pending_events // 4)


class ProcessingSettings(BaseModel):
    """How accepted events are worked off (skyhigh.processing), in one process or a fleet."""

    worker_concurrency: int = Field(default=1, ge=1, le=64)
    # Embedded mode: while more new events than this are accepted a second, a worker thread waits
    # up to WORKER_YIELD_MAX_S before each event, so the request path keeps the process
    # (skyhigh.processing.burst_gate). 0: never wait.
    worker_yield_rate: float = Field(default=1000.0, ge=0)
    worker_yield_max_s: float = Field(default=0.25, ge=0, le=60)
    max_attempts: int = Field(default=3, ge=1)
    shutdown_grace_s: float = 30.0
    # Unset: the embedded in-process workers. redis://host:port/db: Celery workers on Redis.
    queue_url: str | None = None
    # A worker renews its lease every third of this; a dead worker's event is taken over after.
    event_lease_s: float = Field(default=60.0, ge=1)
    # The sweeper re-sends hints for events queued this long without being claimed (the API
    # died before enqueueing, or the broker lost them); duplicates are harmless no-ops.
    requeue_after_s: float = Field(default=300.0, gt=0)
    sweep_interval_s: float = Field(default=10.0, gt=0)
    # Redis redelivers an unacknowledged task after this; longer than any one event may run.
    queue_visibility_timeout_s: float = Field(default=4 * 3600.0, gt=0)
    # Live messages kept per event in Redis (XADD MAXLEN) and for how long after the last one.
    live_stream_maxlen: int = Field(default=2_000, ge=10)
    live_stream_ttl_s: int = Field(default=3_600, ge=60)


class StoreSettings(BaseModel):
    """Where accepted work is kept durably: the event database and the audio spool."""

    database_url: str = "sqlite:///./skyhigh_events.db"
    sqlite_synchronous: Literal["OFF", "NORMAL", "FULL"] = "FULL"
    spool_dir: Path = Path("./spool")


class KnowledgeSettings(BaseModel):
    """The LanceDB knowledge base, its writer and the embedding model (skyhigh.knowledge)."""

    lancedb_uri: str = "./lancedb_data"
    knowledge_table: str = "knowledge"
    embedding_model: str = "all-MiniLM-L6-v2"
    # onnx: the model exported to int8 ONNX (cached in MODEL_CACHE_DIR), run by ONNX Runtime;
    # 3 ms per query against 12-17 ms for torch here, and no torch import (BENCHMARKS.md).
    embedding_backend: Literal["torch", "onnx"] = "onnx"
    # ONNX Runtime threads per embedding call (0: one per core). One is fastest for single
    # queries on a small shared machine and leaves the other cores to Whisper.
    embedding_threads: int = Field(default=1, ge=0, le=64)
    transcripts_table: str = "transcripts"
    chunk_size: int = Field(default=800, ge=100, le=10_000)
    chunk_overlap: int = Field(default=150, ge=0, le=5_000)
    vector_index_min_rows: int = Field(default=10_000, ge=256)
    vector_index_type: Literal["IVF_HNSW_SQ", "IVF_PQ", "IVF_FLAT", "IVF_SQ"] = "IVF_HNSW_SQ"
    vector_nprobes: int = Field(default=20, ge=1)
    vector_refine_factor: int = Field(default=10, ge=1, le=100)
    vector_index_max_segments: int = Field(default=8, ge=1)
    optimize_interval_s: float = Field(default=300.0, gt=0)
    optimize_after_rows: int = Field(default=2_000, ge=1)
    lancedb_keep_versions_s: float = Field(default=600.0, ge=0)
    writer_batch_window_s: float = Field(default=0.02, ge=0)
    # Each new metadata key becomes a column of the table, kept after its documents are gone,
    # and every match carries every column: measured, 480 columns made lookups 3x slower.
    knowledge_max_metadata_columns: int = Field(default=32, ge=2, le=1_000)
    # LANCEDB_URI=s3://bucket/prefix: the object store's standard AWS settings
    # (skyhigh.knowledge.storage). Unset ones fall back to the AWS credential chain.
    aws_endpoint: str | None = None  # MinIO, R2, ...: http(s)://host:port; unset for AWS S3
    aws_endpoint_url: str | None = None  # the same, as newer AWS tools name it
    aws_allow_http: bool = False  # an endpoint on plain http:// (MinIO on a private network)
    aws_region: str | None = None
    aws_access_key_id: str | None = None
    aws_secret_access_key: SecretStr | None = None
    aws_session_token: SecretStr | None = None
    aws_profile: str | None = None
    # Fill an empty knowledge base (no default table yet) with the demo corpus when a process
    # that loads the models starts: a fresh bucket needs no separate seed step.
    seed_empty_knowledge: bool = False


# Each engine's beam width when WHISPER_BEAM_SIZE is unset, from the measured accuracy/speed
# table (BENCHMARKS.md "Speech"): on faster-whisper, beam 5 saves one word in 270 on the accuracy
# set for 17 % of the throughput; on openai-whisper it saves five.
DEFAULT_BEAM_SIZE: dict[str, int] = {"faster-whisper": 1, "openai-whisper": 5}


class SpeechSettings(BaseModel):
    """Whisper engines, weights and decoding (skyhigh.speech)."""

    whisper_engine: Literal["openai-whisper", "faster-whisper"] = "openai-whisper"
    whisper_model: str = "base"
    whisper_compute_type: str = "int8"
    whisper_device: str = "cpu"
    whisper_cpu_threads: int = Field(default=0, ge=0)
    # Beam width; unset, each engine's measured default (DEFAULT_BEAM_SIZE). The VAD below was
    # chosen by bench/wer_harness.py (BENCHMARKS.md "Speech").
    whisper_beam_size: int | None = Field(default=None, ge=1, le=10)
    whisper_condition_on_previous_text: bool = False
    whisper_temperature_fallback: bool = True
    whisper_no_speech_threshold: float = 0.6
    whisper_logprob_threshold: float = -1.0
    whisper_instances: int = Field(default=1, ge=1, le=8)
    # Voice activity detection (Silero): only speech is decoded, in chunks of at most 30 s.
    whisper_vad: bool = True
    whisper_vad_threshold: float = Field(default=0.5, gt=0, lt=1)
    whisper_vad_min_silence_ms: int = Field(default=2000, ge=0, le=10_000)
    whisper_vad_speech_pad_ms: int = Field(default=400, ge=0, le=2_000)
    whisper_vad_max_chunk_s: float = Field(default=30.0, ge=1, le=30)
    # A chunk whose text loops (compression ratio) is decoded again split at these pauses.
    whisper_loop_guard: bool = True
    whisper_loop_guard_min_silence_ms: int = Field(default=500, ge=0, le=10_000)
    # Speech chunks per model call (within a clip; across clips with cross-request batching).
    whisper_batch_size: int = Field(default=4, ge=1, le=64)
    whisper_cross_request_batching: bool = False
    whisper_batch_max_wait_ms: float = Field(default=30.0, ge=0, le=1_000)
    model_cache_dir: Path = Path.home() / ".cache" / "skyhigh"
    max_audio_seconds: float = 30 * 60
    # Wall-clock limit of each ffprobe/ffmpeg run: a hostile file cannot hold a worker forever.
    ffmpeg_timeout_s: float = Field(default=60.0, gt=0)
    # Who decodes uploads: the ffmpeg command line, or PyAV (FFmpeg's libraries in the `av` wheel
    # faster-whisper installs; the slim image has no ffmpeg). auto: ffmpeg when on PATH.
    audio_decoder: Literal["auto", "ffmpeg", "pyav"] = "auto"
    # Transcription time per event; past it the event fails with audio_too_long. VAD makes
    # silence cheap, this bounds what VAD cannot (hours of noise that sounds like speech).
    max_transcribe_seconds: float = Field(default=900.0, gt=0)
    # Speaker diarization (skyhigh.speech.diarization): the speaker model loads once per worker,
    # on the first event that asks for it. Off: `diarize: true` events fail with a clear error.
    diarization: bool = True
    diarization_backend: Literal["onnx", "torch"] = "onnx"
    diarization_threads: int = Field(default=1, ge=1, le=16)
    # A known speaker's reference clip longer than this fails the event (a few seconds suffice).
    diarization_max_reference_s: float = Field(default=30.0, gt=0, le=300)

    @property
    def beam_size(self) -> int:
        """WHISPER_BEAM_SIZE, or the engine's default when it is unset."""
        if self.whisper_beam_size is not None:
            return self.whisper_beam_size
        return DEFAULT_BEAM_SIZE[self.whisper_engine]


class WebhookSettings(BaseModel):
    """Signed webhooks (skyhigh.webhooks)."""

    webhook_url: str | None = None
    webhook_secret: SecretStr | None = None
    webhook_max_attempts: int = Field(default=12, ge=1, le=50)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_backoff_s: float = Field(default=5.0, gt=0)
    webhook_allow_private: bool = False


class ObservabilitySettings(BaseModel):
    log_level: str = "INFO"
    # Set: GET /metrics needs `Authorization: Bearer <METRICS_TOKEN>`. Unset: /metrics is public.
    metrics_token: SecretStr | None = None
    # Celery worker processes serve no HTTP: >0 serves their Prometheus metrics on this port
    # (one port per process; give each worker on a host its own). 0: off.
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)


class RealtimeSettings(BaseModel):
    """Realtime transcription over WebSocket (skyhigh.realtime)."""

    # Off by default: on, the API process loads one more (small) model at startup.
    realtime_enabled: bool = False
    realtime_engine: Literal["openai-whisper", "faster-whisper"] = "faster-whisper"
    # tiny.en: a base decode of a few seconds costs ~1 s here (30 s encoder window).
    realtime_model: str = "tiny.en"
    realtime_partial_interval_ms: int = Field(default=500, ge=100, le=10_000)
    # A new turn's first partial decode once it holds this much speech (0: at the next interval).
    realtime_first_decode_ms: int = Field(default=0, ge=0, le=10_000)
    # Words ending this long before a partial decode's audio ends go out at once; 0: agreement.
    realtime_settled_word_s: float = Field(default=0.6, ge=0, le=10)
    # The session's last this many characters of completed text prompt each final; 0: none.
    realtime_context_chars: int = Field(default=0, ge=0, le=1000)
    realtime_max_turn_s: float = Field(default=20.0, ge=2, le=30)
    # Each turn's final decode; partial decodes are greedy, since they set the delta latency.
    realtime_final_beam_size: int = Field(default=5, ge=1, le=10)
    # server_vad's silence_duration_ms when a session does not set it (OpenAI's default: 500).
    realtime_silence_duration_ms: int = Field(default=500, ge=100, le=10_000)
    realtime_max_session_s: float = Field(default=3600.0, gt=0)
    realtime_idle_timeout_s: float = Field(default=60.0, gt=0)
    realtime_max_append_bytes: int = Field(default=1 * MiB, ge=1024)
    realtime_sessions_per_principal: int = Field(default=4, ge=1)
    realtime_max_sessions: int = Field(default=2, ge=1)
    # Admission refuses new sessions while a running one's decoding lags more than this.
    realtime_max_lag_s: float = Field(default=3.0, gt=0)
    realtime_client_secret_ttl_s: int = Field(default=600, ge=10, le=7200)


Group = TypeVar("Group", bound=BaseModel)


class Settings(
    AuthSettings,
    IntakeSettings,
    ProcessingSettings,
    StoreSettings,
    KnowledgeSettings,
    SpeechSettings,
    WebhookSettings,
    ObservabilitySettings,
    RealtimeSettings,
    BaseSettings,
):
    """Service configuration. Every field maps to an upper-case environment variable."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    def _group(self, group: type[Group]) -> Group:
        # Already validated here; the group is a view with only its own fields.
        return group.model_construct(**{name: getattr(self, name) for name in group.model_fields})

    @cached_property
    def auth(self) -> AuthSettings:
        return self._group(AuthSettings)

    @cached_property
    def intake(self) -> IntakeSettings:
        return self._group(IntakeSettings)

    @cached_property
    def processing(self) -> ProcessingSettings:
        return self._group(ProcessingSettings)

    @cached_property
    def store(self) -> StoreSettings:
        return self._group(StoreSettings)

    @cached_property
    def knowledge(self) -> KnowledgeSettings:
        return self._group(KnowledgeSettings)

    @cached_property
    def speech(self) -> SpeechSettings:
        return self._group(SpeechSettings)

    @cached_property
    def webhooks(self) -> WebhookSettings:
        return self._group(WebhookSettings)

    @cached_property
    def realtime(self) -> RealtimeSettings:
        return self._group(RealtimeSettings)


@lru_cache
def get_settings() -> Settings:
    return Settings()
