"""Speech to text: a Transcriber protocol with openai-whisper and faster-whisper engines.

With WHISPER_VAD on (the default) both engines transcribe only the speech that Silero VAD finds,
in chunks of at most 30 s decoded WHISPER_BATCH_SIZE at a time (skyhigh.speech.speech_only); with
it off they run the libraries' own sequential `transcribe` over 30-second windows, as before.

Importing this module loads no weights; `load_transcriber` / `TranscriberPool.from_settings` do,
so the service builds them in its lifespan (or a worker at start-up).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol, TypeVar

import numpy as np

from skyhigh.config import SpeechSettings
from skyhigh.domain.events import Segment, Transcript, Word
from skyhigh.speech import vad
from skyhigh.speech.batching import ChunkRunner, LocalBatches, MicroBatcher
from skyhigh.speech.chunk_decoder import (
    BEST_OF,
    COMPRESSION_RATIO_THRESHOLD,
    TEMPERATURES,
    ChunkDecoder,
    GatePolicy,
)
from skyhigh.speech.faster_chunks import FasterChunkDecoder
from skyhigh.speech.speech_only import transcribe_speech
from skyhigh.speech.vad import VadOptions
from skyhigh.speech.weights import ResolvedModel, downloaded, resolve_whisper_model
from skyhigh.speech.whisper_hooks import transcribe_reporting

log = logging.getLogger(__name__)

SAMPLE_RATE: Final = 16_000
T = TypeVar("T")

# Both engines' default fallback (skyhigh.speech.chunk_decoder), for the sequential path too.
_TEMPERATURES: Final = TEMPERATURES
_COMPRESSION_RATIO_THRESHOLD: Final = COMPRESSION_RATIO_THRESHOLD
_BEST_OF: Final = BEST_OF

SegmentCallback = Callable[[Segment], None]


@dataclass(frozen=True, kw_only=True)
class TranscribeOptions:
    """Per-clip choices; model-wide decoding settings come from SpeechSettings."""

    language: str | None = None
    task: Literal["transcribe", "translate"] = "transcribe"
    word_timestamps: bool = False
    initial_prompt: str | None = None


class Transcriber(Protocol):
    """One loaded model. A second engine plugs in by implementing `transcribe`; to take part in
    VAD chunking and batching it also exposes a `ChunkDecoder` and a settable `runner`."""

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
    condition_on_previous_text: bool = False  # the sequential path; chunks never condition
    no_speech_threshold: float = 0.6
    logprob_threshold: float = -1.0
    vad: VadOptions | None = VadOptions()  # None: the libraries' sequential transcribe
    batch_size: int = 4  # speech chunks per model call

    @classmethod
    def from_settings(cls, settings: SpeechSettings) -> DecodingSettings:
        return cls(
            beam_size=settings.whisper_beam_size,
            condition_on_previous_text=settings.whisper_condition_on_previous_text,
            no_speech_threshold=settings.whisper_no_speech_threshold,
            logprob_threshold=settings.whisper_logprob_threshold,
            vad=VadOptions.from_settings(settings) if settings.whisper_vad else None,
            batch_size=settings.whisper_batch_size,
        )

    @property
    def policy(self) -> GatePolicy:
        return GatePolicy(
            beam_size=self.beam_size,
            no_speech_threshold=self.no_speech_threshold,
            logprob_threshold=self.logprob_threshold,
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
        # Imported here, like whisper: with faster-whisper the process never loads torch.
        import torch

        from skyhigh.speech.openai_chunks import OpenAIChunkDecoder

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
        self.decoder: ChunkDecoder = OpenAIChunkDecoder(
            self._model, policy=decoding.policy, fp16=self._fp16
        )
        self.runner: ChunkRunner = LocalBatches(self.decoder, batch_size=decoding.batch_size)

    def transcribe(
        self,
        audio: np.ndarray[Any, np.dtype[np.float32]],
        options: TranscribeOptions,
        *,
        on_segment: SegmentCallback | None = None,
    ) -> Transcript:
        if self._decoding.vad is not None:
            return _speech_only(self, audio, options, self._decoding.vad, on_segment)
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
        import torch
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
    import torch

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
        seek=int(raw["seek"]),
        tokens=[int(token) for token in raw["tokens"]],
        temperature=float(raw["temperature"]),
        compression_ratio=float(raw["compression_ratio"]),
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
            # CTranslate2's own default is 4 threads whatever the machine: on 2 cores that
            # oversubscribes them (bench/thread_probe.py), so 0 means one per available core.
            cpu_threads=cpu_threads or available_cores(),
            # one transcription at a time per instance: the pool provides the parallelism
            num_workers=1,
        )
        self.decoder: ChunkDecoder = FasterChunkDecoder(self._model, policy=decoding.policy)
        self.runner: ChunkRunner = LocalBatches(self.decoder, batch_size=decoding.batch_size)

    def transcribe(
        self,
        audio: np.ndarray[Any, np.dtype[np.float32]],
        options: TranscribeOptions,
        *,
        on_segment: SegmentCallback | None = None,
    ) -> Transcript:
        if self._decoding.vad is not None:
            return _speech_only(self, audio, options, self._decoding.vad, on_segment)
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
        seek=int(raw.seek),
        tokens=[int(token) for token in raw.tokens],
        temperature=float(raw.temperature),
        compression_ratio=float(raw.compression_ratio),
    )


EngineTranscriber = OpenAIWhisperTranscriber | FasterWhisperTranscriber

# --------------------------------------------------------------------------- shared


def _speech_only(
    transcriber: EngineTranscriber,
    audio: np.ndarray[Any, np.dtype[np.float32]],
    options: TranscribeOptions,
    vad: VadOptions,
    on_segment: SegmentCallback | None,
) -> Transcript:
    return transcribe_speech(
        audio,
        language=options.language,
        task=options.task,
        word_timestamps=options.word_timestamps,
        initial_prompt=options.initial_prompt,
        runner=transcriber.runner,
        vad=vad,
        multilingual=transcriber.decoder.multilingual,
        on_segment=on_segment,
    )


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
        import torch

        torch.set_num_threads(settings.whisper_cpu_threads)


def _resolve(settings: SpeechSettings) -> ResolvedModel:
    return resolve_whisper_model(
        settings.whisper_model,
        engine=settings.whisper_engine,
        cache_dir=settings.model_cache_dir,
    )


def _build(resolved: ResolvedModel, settings: SpeechSettings) -> EngineTranscriber:
    started = time.perf_counter()
    decoding = DecodingSettings.from_settings(settings)
    transcriber: EngineTranscriber
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
    if decoding.vad is not None:
        vad.warm_up()  # the Silero session, once per process, at startup
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
    return on_passing_thread(lambda: _build(_resolve(settings), settings))


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def on_passing_thread(build: Callable[[], T]) -> T:
    """Run `build` on a thread that ends when it returns.

    Loading weights runs torch operations, which give the loading thread an OpenMP team; GNU
    OpenMP keeps a thread's team until the thread ends, and once a process has more OpenMP
    threads than cores it stops spin-waiting between parallel regions everywhere (libgomp's
    "throttled" spin count). A long-lived loading thread (the lifespan's) would so leave the
    worker thread that runs inference 25-30% slower than the main thread on an idle machine
    (bench/thread_probe.py); loaded here, the worker's team is the only one.
    """
    box: dict[str, T] = {}
    failure: list[BaseException] = []

    def run() -> None:
        try:
            box["value"] = build()
        except BaseException as exc:  # re-raised on the caller's thread
            failure.append(exc)

    thread = threading.Thread(target=run, name="skyhigh-model-load")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return box["value"]


class TranscriberPool:
    """Loaded transcribers, each lent to one caller at a time.

    pool = TranscriberPool.from_settings(settings)  # whisper_instances models
    with pool.borrow() as transcriber:              # blocks while all are busy
        transcript = transcriber.transcribe(audio, TranscribeOptions(language="en"))

    With `batchers` (WHISPER_CROSS_REQUEST_BATCHING) every transcriber sends its chunks to its
    instance's MicroBatcher thread, so it is lent to any number of callers at once (the least
    busy instance first): concurrent clips then share batches instead of waiting their turn.
    """

    def __init__(
        self, transcribers: Sequence[Transcriber], *, batchers: Sequence[MicroBatcher] = ()
    ) -> None:
        if not transcribers:
            raise ValueError("a TranscriberPool needs at least one transcriber")
        first = transcribers[0]
        self.engine = first.engine
        self.model_name = first.model_name
        self.sha256 = first.sha256
        self.size = len(transcribers)
        self.batchers = list(batchers)
        self._idle: queue.Queue[Transcriber] = queue.Queue()
        for transcriber in transcribers:
            self._idle.put(transcriber)
        self._shared = {id(t): 0 for t in transcribers} if self.batchers else {}
        self._by_id = {id(t): t for t in transcribers}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: SpeechSettings) -> TranscriberPool:
        """Resolve the model once, then load settings.whisper_instances copies of it."""
        if settings.whisper_cross_request_batching and not settings.whisper_vad:
            raise ValueError(
                "WHISPER_CROSS_REQUEST_BATCHING batches speech chunks, which WHISPER_VAD=true "
                "makes: turn VAD on or cross-request batching off"
            )
        _configure_threads(settings)

        def build() -> list[EngineTranscriber]:
            resolved = _resolve(settings)  # may convert weights: torch work, so here too
            return [_build(resolved, settings) for _ in range(settings.whisper_instances)]

        transcribers = on_passing_thread(build)
        if not settings.whisper_cross_request_batching:
            return cls(transcribers)
        batchers = []
        for transcriber in transcribers:
            batcher = MicroBatcher(
                transcriber.decoder,
                max_batch=settings.whisper_batch_size,
                max_wait_s=settings.whisper_batch_max_wait_ms / 1000,
            )
            transcriber.runner = batcher
            batchers.append(batcher)
        return cls(transcribers, batchers=batchers)

    @contextmanager
    def borrow(self, *, timeout: float | None = None) -> Iterator[Transcriber]:
        """Lend an idle transcriber; TimeoutError if none frees up within `timeout` seconds."""
        if self._shared:
            with self._shared_lease() as shared:
                yield shared
            return
        try:
            transcriber = self._idle.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError(f"no idle transcriber within {timeout}s") from None
        try:
            yield transcriber
        finally:
            self._idle.put(transcriber)

    @contextmanager
    def _shared_lease(self) -> Iterator[Transcriber]:
        with self._lock:
            chosen = min(self._shared, key=self._shared.__getitem__)
            self._shared[chosen] += 1
        try:
            yield self._by_id[chosen]
        finally:
            with self._lock:
                self._shared[chosen] -= 1

    def close(self) -> None:
        """Stop the batching threads (after what was submitted is decoded)."""
        for batcher in self.batchers:
            batcher.close()
