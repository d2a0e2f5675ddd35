"""Speech to text: a Transcriber protocol with openai-whisper and faster-whisper engines.

Importing this module loads no weights; `load_transcriber` / `TranscriberPool.from_settings` do,
so the service builds them in its lifespan (or a worker at start-up).
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

import numpy as np
import torch

from skyhigh.config import SpeechSettings
from skyhigh.domain.events import Segment, Transcript, Word
from skyhigh.speech.weights import ResolvedModel, downloaded, resolve_whisper_model
from skyhigh.speech.whisper_hooks import transcribe_reporting

log = logging.getLogger(__name__)

SAMPLE_RATE: Final = 16_000

# Both engines' default fallback: retry a window at rising temperature when greedy output looks
# like a repetition loop (compression ratio) or is improbable (avg logprob).
_TEMPERATURES: Final = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
_COMPRESSION_RATIO_THRESHOLD: Final = 2.4
_BEST_OF: Final = 5

SegmentCallback = Callable[[Segment], None]


@dataclass(frozen=True, kw_only=True)
class TranscribeOptions:
    """Per-clip choices; model-wide decoding settings come from SpeechSettings."""

    language: str | None = None
    task: Literal["transcribe", "translate"] = "transcribe"
    word_timestamps: bool = False
    initial_prompt: str | None = None


class Transcriber(Protocol):
    engine: str  # "openai-whisper" | "faster-whisper"
    model_name: str
    sha256: str

    def transcribe(
        self,
        audio: np.ndarray[Any, np.dtype[np.float32]],
        options: TranscribeOptions,
        *,
        on_segment: SegmentCallback | None = None,
    ) -> Transcript: ...


@dataclass(frozen=True, kw_only=True)
class DecodingSettings:
    """The model-wide decoding knobs, shared by both engines so they behave alike."""

    beam_size: int = 1
    condition_on_previous_text: bool = False
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0

    @classmethod
    def from_settings(cls, settings: SpeechSettings) -> DecodingSettings:
        return cls(
            beam_size=settings.whisper_beam_size,
            condition_on_previous_text=settings.whisper_condition_on_previous_text,
            no_speech_threshold=settings.whisper_no_speech_threshold,
            logprob_threshold=settings.whisper_logprob_threshold,
        )


# --------------------------------------------------------------------------- openai-whisper


class OpenAIWhisperTranscriber:
    """openai-whisper (PyTorch) on a checkpoint: converted from CT2, a .pt path, or downloaded."""

    engine = "openai-whisper"

    def __init__(
        self, resolved: ResolvedModel, *, decoding: DecodingSettings, device: str = "cpu"
    ) -> None:
        import whisper

        if resolved.checkpoint is None and resolved.download_root is None:
            raise ValueError(f"{resolved.name}: openai-whisper needs a checkpoint")
        self.model_name = resolved.name
        self._decoding = decoding
        if device == "auto":  # faster-whisper's spelling; torch needs a concrete device
            device = "cuda" if torch.cuda.is_available() else "cpu"
        # fp16 is unsupported on CPU (whisper warns and falls back); ask for what will run.
        self._fp16 = device != "cpu"
        if resolved.download_root is not None:
            # whisper's own download verifies the digest from its URL and sets alignment heads;
            # only then is there a file to name and hash.
            root = str(resolved.download_root)
            self._model = whisper.load_model(resolved.name, device=device, download_root=root)
            resolved = downloaded(resolved)
        else:
            self._model = whisper.load_model(str(resolved.checkpoint), device=device)
        self.sha256 = _weights_sha256(resolved)
        if resolved.alignment_heads:
            _set_alignment_heads(self._model, resolved.alignment_heads)

    def transcribe(
        self,
        audio: np.ndarray[Any, np.dtype[np.float32]],
        options: TranscribeOptions,
        *,
        on_segment: SegmentCallback | None = None,
    ) -> Transcript:
        language, probability = options.language, None
        if language is None and self._model.is_multilingual:
            language, probability = self._detect_language(audio)
        d = self._decoding
        reported: list[Segment] = []

        def report_new(raw_segments: list[dict[str, Any]]) -> None:
            # Called after each decoded window (see skyhigh.speech.whisper_hooks).
            for index in range(len(reported), len(raw_segments)):
                reported.append(_openai_segment(index, raw_segments[index]))
                if on_segment is not None:
                    on_segment(reported[-1])

        result = transcribe_reporting(
            report_new,
            self._model,
            audio,
            verbose=None,  # no printing, no progress bar
            temperature=_TEMPERATURES,
            compression_ratio_threshold=_COMPRESSION_RATIO_THRESHOLD,
            # whisper applies the no-speech gate itself: a window is skipped when
            # no_speech_prob > no_speech_threshold and avg_logprob < logprob_threshold.
            logprob_threshold=d.logprob_threshold,
            no_speech_threshold=d.no_speech_threshold,
            condition_on_previous_text=d.condition_on_previous_text,
            initial_prompt=options.initial_prompt,
            word_timestamps=options.word_timestamps,
            language=language,
            task=options.task,
            # whisper decodes greedily only when beam_size is None; 1 would run a 1-wide beam.
            beam_size=d.beam_size if d.beam_size > 1 else None,
            best_of=_BEST_OF,
            fp16=self._fp16,
        )
        # Whatever the window hook did not report (none, if whisper changed) is reported now.
        report_new(result["segments"])
        segments = reported
        return _transcript(segments, str(result["language"]), probability, audio)

    def _detect_language(self, audio: np.ndarray[Any, np.dtype[np.float32]]) -> tuple[str, float]:
        """Detect exactly as whisper.transcribe does, but keep the probability it discards."""
        import whisper
        from whisper.audio import N_FRAMES, N_SAMPLES

        mel = whisper.log_mel_spectrogram(audio, self._model.dims.n_mels, padding=N_SAMPLES)
        dtype = torch.float16 if self._fp16 else torch.float32
        segment = whisper.pad_or_trim(mel, N_FRAMES).to(self._model.device).to(dtype)
        _, probs = self._model.detect_language(segment)
        language = max(probs, key=probs.get)
        return str(language), float(probs[language])


def _weights_sha256(resolved: ResolvedModel) -> str:
    if resolved.sha256 is None:  # only a download not yet made lacks one
        raise ValueError(f"{resolved.name}: no digest for weights that are not there yet")
    return resolved.sha256


def _set_alignment_heads(model: Any, heads: Sequence[tuple[int, int]]) -> None:
    # Same buffer whisper.Whisper.set_alignment_heads builds from its compressed dumps.
    dims = model.dims
    mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
    for layer, head in heads:
        mask[layer, head] = True
    model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)


def _openai_segment(index: int, raw: dict[str, Any]) -> Segment:
    words = raw.get("words")
    return Segment(
        id=index,
        start=float(raw["start"]),
        end=float(raw["end"]),
        text=str(raw["text"]),
        avg_logprob=float(raw["avg_logprob"]),
        no_speech_prob=float(raw["no_speech_prob"]),
        words=None
        if words is None
        else [_word(w["word"], w["start"], w["end"], w["probability"]) for w in words],
    )


# --------------------------------------------------------------------------- faster-whisper


class FasterWhisperTranscriber:
    """faster-whisper (CTranslate2) on a CT2 model directory."""

    engine = "faster-whisper"

    def __init__(
        self,
        resolved: ResolvedModel,
        *,
        decoding: DecodingSettings,
        device: str = "cpu",
        compute_type: str = "int8",
        cpu_threads: int = 0,
    ) -> None:
        from faster_whisper import WhisperModel

        if resolved.ct2_dir is None:
            raise ValueError(f"{resolved.name}: faster-whisper needs a CTranslate2 directory")
        self.model_name = resolved.name
        self.sha256 = _weights_sha256(resolved)
        self._decoding = decoding
        self._model = WhisperModel(
            str(resolved.ct2_dir),
            device=device,
            compute_type=compute_type,
            cpu_threads=cpu_threads,
            # one transcription at a time per instance: the pool provides the parallelism
            num_workers=1,
        )

    def transcribe(
        self,
        audio: np.ndarray[Any, np.dtype[np.float32]],
        options: TranscribeOptions,
        *,
        on_segment: SegmentCallback | None = None,
    ) -> Transcript:
        d = self._decoding
        raw_segments, info = self._model.transcribe(
            audio,
            language=options.language,
            task=options.task,
            beam_size=d.beam_size,
            best_of=_BEST_OF,
            temperature=list(_TEMPERATURES),
            compression_ratio_threshold=_COMPRESSION_RATIO_THRESHOLD,
            # faster-whisper applies whisper's no-speech gate per window, like openai-whisper.
            log_prob_threshold=d.logprob_threshold,
            no_speech_threshold=d.no_speech_threshold,
            condition_on_previous_text=d.condition_on_previous_text,
            initial_prompt=options.initial_prompt,
            word_timestamps=options.word_timestamps,
            vad_filter=False,
        )
        segments: list[Segment] = []
        for raw in raw_segments:  # a generator: each window is decoded as we iterate
            segment = _faster_segment(len(segments), raw)
            segments.append(segment)
            if on_segment is not None:
                on_segment(segment)
        # faster-whisper reports 1.0 when nothing was detected; None says "not measured".
        detected = options.language is None and self._model.model.is_multilingual
        probability = float(info.language_probability) if detected else None
        return _transcript(segments, str(info.language), probability, audio)


def _faster_segment(index: int, raw: Any) -> Segment:
    words = raw.words
    return Segment(
        id=index,
        start=float(raw.start),
        end=float(raw.end),
        text=str(raw.text),
        avg_logprob=float(raw.avg_logprob),
        no_speech_prob=float(raw.no_speech_prob),
        words=None
        if words is None
        else [_word(w.word, w.start, w.end, w.probability) for w in words],
    )


# --------------------------------------------------------------------------- shared


def _word(word: Any, start: Any, end: Any, probability: Any) -> Word:
    return Word(word=str(word), start=float(start), end=float(end), probability=float(probability))


def _transcript(
    segments: list[Segment],
    language: str,
    probability: float | None,
    audio: np.ndarray[Any, np.dtype[np.float32]],
) -> Transcript:
    return Transcript(
        text="".join(segment.text for segment in segments).strip(),
        language=language,
        language_probability=probability,
        duration_s=len(audio) / SAMPLE_RATE,
        segments=segments,
    )


def _configure_threads(settings: SpeechSettings) -> None:
    # torch's default is one thread per core; with several instances or other workers on the host
    # that oversubscribes, so an explicit whisper_cpu_threads caps it (process-wide setting).
    if settings.whisper_engine == "openai-whisper" and settings.whisper_cpu_threads > 0:
        torch.set_num_threads(settings.whisper_cpu_threads)


def _resolve(settings: SpeechSettings) -> ResolvedModel:
    return resolve_whisper_model(
        settings.whisper_model,
        engine=settings.whisper_engine,
        cache_dir=settings.model_cache_dir,
    )


def _build(resolved: ResolvedModel, settings: SpeechSettings) -> Transcriber:
    started = time.perf_counter()
    decoding = DecodingSettings.from_settings(settings)
    transcriber: Transcriber
    if settings.whisper_engine == "faster-whisper":
        transcriber = FasterWhisperTranscriber(
            resolved,
            decoding=decoding,
            device=settings.whisper_device,
            compute_type=settings.whisper_compute_type,
            cpu_threads=settings.whisper_cpu_threads,
        )
    else:
        transcriber = OpenAIWhisperTranscriber(
            resolved, decoding=decoding, device=settings.whisper_device
        )
    log.info(
        "loaded %s %s (%s, sha256 %s) in %.2fs",
        transcriber.engine,
        resolved.name,
        resolved.source,
        transcriber.sha256[:12],
        time.perf_counter() - started,
    )
    return transcriber


def load_transcriber(settings: SpeechSettings) -> Transcriber:
    """Resolve, verify and load one transcriber for settings.whisper_engine/whisper_model."""
    _configure_threads(settings)
    return _build(_resolve(settings), settings)


class TranscriberPool:
    """Loaded transcribers, each lent to one caller at a time.

    pool = TranscriberPool.from_settings(settings)  # whisper_instances models
    with pool.borrow() as transcriber:              # blocks while all are busy
        transcript = transcriber.transcribe(audio, TranscribeOptions(language="en"))
    """

    def __init__(self, transcribers: Sequence[Transcriber]) -> None:
        if not transcribers:
            raise ValueError("a TranscriberPool needs at least one transcriber")
        first = transcribers[0]
        self.engine = first.engine
        self.model_name = first.model_name
        self.sha256 = first.sha256
        self.size = len(transcribers)
        self._idle: queue.Queue[Transcriber] = queue.Queue()
        for transcriber in transcribers:
            self._idle.put(transcriber)

    @classmethod
    def from_settings(cls, settings: SpeechSettings) -> TranscriberPool:
        """Resolve the model once, then load settings.whisper_instances copies of it."""
        _configure_threads(settings)
        resolved = _resolve(settings)
        return cls([_build(resolved, settings) for _ in range(settings.whisper_instances)])

    @contextmanager
    def borrow(self, *, timeout: float | None = None) -> Iterator[Transcriber]:
        """Lend an idle transcriber; TimeoutError if none frees up within `timeout` seconds."""
        try:
            transcriber = self._idle.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no idle transcriber within {timeout}s") from None
        try:
            yield transcriber
        finally:
            self._idle.put(transcriber)
