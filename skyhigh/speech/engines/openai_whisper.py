"""openai-whisper (PyTorch): the engine's transcriber and its batched chunk decoder.

Weights are a checkpoint: converted from the bundled CTranslate2 weights, a .pt path, or
downloaded by whisper itself (skyhigh.speech.weights). torch and whisper are imported inside
functions, so a process that runs faster-whisper never loads torch.

Batched chunks: `whisper.decode` takes a batch of 30-second log-mel windows and decodes them
together; `whisper.transcribe` only ever hands it one. For beam search or best-of-N sampling,
whisper's DecodingTask repeats each window's tokens per beam/sample but not its audio features,
so a batch of two or more windows fails ("The size of tensor a (10) must match the size of tensor
b (2)"). `_GroupedDecodingTask` repeats the features with the tokens; with that, chunks that need
temperature fallback decode together like the others.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Self

from skyhigh.config import SpeechSettings
from skyhigh.speech.chunk_decoder import (
    ChunkSegment,
    Decoded,
    DecodeKey,
    as_words,
    chunk_segments,
    decode_with_fallback,
)
from skyhigh.speech.deadline import Deadline, check
from skyhigh.speech.decoding import (
    BEST_OF,
    COMPRESSION_RATIO_THRESHOLD,
    DecodingSettings,
    GatePolicy,
)
from skyhigh.speech.engine_base import RawSegmentSink, WhisperTranscriber
from skyhigh.speech.protocol import TranscribeOptions
from skyhigh.speech.registry import register_engine
from skyhigh.speech.samples import (
    FRAMES_PER_SECOND,
    SAMPLE_RATE,
    WINDOW_FRAMES,
    WINDOW_SAMPLES,
    FloatArray,
)
from skyhigh.speech.weights import ResolvedModel, downloaded
from skyhigh.speech.whisper_hooks import transcribe_reporting

if TYPE_CHECKING:
    import torch


@register_engine
class OpenAIWhisperTranscriber(WhisperTranscriber):
    """openai-whisper (PyTorch) on a checkpoint: converted from CT2, a .pt path, or downloaded."""

    engine = "openai-whisper"

    def __init__(
        self, resolved: ResolvedModel, *, decoding: DecodingSettings, device: str = "cpu"
    ) -> None:
        import torch
        import whisper

        if resolved.checkpoint is None and resolved.download_root is None:
            raise ValueError(f"{resolved.name}: openai-whisper needs a checkpoint")
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
        if resolved.sha256 is None:  # only a download not yet made lacks one
            raise ValueError(f"{resolved.name}: no digest for weights that are not there yet")
        if resolved.alignment_heads:
            _set_alignment_heads(self._model, resolved.alignment_heads)
        decoder = OpenAIChunkDecoder(self._model, policy=decoding.policy, fp16=self._fp16)
        super().__init__(
            model_name=resolved.name, sha256=resolved.sha256, decoder=decoder, decoding=decoding
        )

    @classmethod
    def load(cls, resolved: ResolvedModel, settings: SpeechSettings) -> Self:
        decoding = DecodingSettings.from_settings(settings)
        return cls(resolved, decoding=decoding, device=settings.whisper_device)

    @classmethod
    def configure_process(cls, settings: SpeechSettings) -> None:
        # torch's default is one thread per core; with several instances or other workers on
        # the host that oversubscribes, so WHISPER_CPU_THREADS caps it (a process-wide setting).
        if settings.whisper_cpu_threads > 0:
            import torch

            torch.set_num_threads(settings.whisper_cpu_threads)

    def _transcribe_windows(
        self,
        audio: FloatArray,
        options: TranscribeOptions,
        language: str,
        emit: RawSegmentSink,
        deadline: Deadline | None,
    ) -> None:
        d = self._decoding
        beam_size = options.beam_size or d.beam_size
        reported = 0

        def report_new(raw_segments: list[dict[str, Any]]) -> None:
            # Called after each decoded window (see skyhigh.speech.whisper_hooks).
            nonlocal reported
            for raw in raw_segments[reported:]:
                emit(raw)
            reported = len(raw_segments)
            check(deadline)

        result = transcribe_reporting(
            report_new,
            self._model,
            audio,
            verbose=None,  # no printing, no progress bar
            temperature=d.temperatures,
            compression_ratio_threshold=COMPRESSION_RATIO_THRESHOLD,
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
            beam_size=beam_size if beam_size > 1 else None,
            best_of=BEST_OF,
            fp16=self._fp16,
        )
        # Whatever the window hook did not report (none, if whisper changed) is reported now.
        for raw in result["segments"][reported:]:
            emit(raw)


def _set_alignment_heads(model: Any, heads: Sequence[tuple[int, int]]) -> None:
    import torch

    # Same buffer whisper.Whisper.set_alignment_heads builds from its compressed dumps.
    dims = model.dims
    mask = torch.zeros(dims.n_text_layer, dims.n_text_head, dtype=torch.bool)
    for layer, head in heads:
        mask[layer, head] = True
    model.register_buffer("alignment_heads", mask.to_sparse(), persistent=False)


class OpenAIChunkDecoder:
    """Batched decoding on an openai-whisper model (use from one thread at a time)."""

    def __init__(self, model: Any, *, policy: GatePolicy, fp16: bool) -> None:
        self._model = model
        self._policy = policy
        self._fp16 = fp16
        self.multilingual = bool(model.is_multilingual)

    def _mel(self, audio: FloatArray) -> torch.Tensor:
        import torch
        import whisper

        # As whisper.transcribe does: pad the audio with a window of silence, then take 30 s.
        mel = whisper.log_mel_spectrogram(audio, self._model.dims.n_mels, padding=WINDOW_SAMPLES)
        dtype = torch.float16 if self._fp16 else torch.float32
        window: torch.Tensor = whisper.pad_or_trim(mel, WINDOW_FRAMES)
        return window.to(self._model.device).to(dtype)

    def detect_language(self, audio: FloatArray) -> tuple[str, float]:
        _, probs = self._model.detect_language(self._mel(audio[:WINDOW_SAMPLES]))
        language = max(probs, key=probs.get)
        return str(language), float(probs[language])

    def decode(self, audios: Sequence[FloatArray], key: DecodeKey) -> list[list[ChunkSegment]]:
        import torch
        from whisper.tokenizer import get_tokenizer

        tokenizer = get_tokenizer(
            self.multilingual,
            num_languages=self._model.num_languages,
            language=key.language,
            task=key.task,
        )
        mels = torch.stack([self._mel(audio) for audio in audios])
        with torch.no_grad():  # encoded once: every temperature of the fallback decodes it
            encoded = self._model.encoder(mels)
        prompt = tokenizer.encode(" " + key.initial_prompt.strip()) if key.initial_prompt else None
        policy = key.policy(self._policy)

        def decode_once(indices: list[int], temperature: float) -> list[Decoded]:
            return self._decode_once(encoded[indices], key, prompt, temperature, policy.beam_size)

        chosen = decode_with_fallback(len(audios), decode_once, policy)

        def add_words(index: int, segments: list[ChunkSegment], duration: float) -> None:
            self._add_words(segments, tokenizer, mels[index], duration)

        return chunk_segments(
            chosen,
            [len(audio) / SAMPLE_RATE for audio in audios],
            policy,
            timestamp_begin=tokenizer.timestamp_begin,
            decode_text=tokenizer.decode,
            add_words=add_words if key.word_timestamps else None,
        )

    def _decode_once(
        self,
        encoded: torch.Tensor,
        key: DecodeKey,
        prompt: list[int] | None,
        temperature: float,
        beam_size: int,
    ) -> list[Decoded]:
        """Decode a batch of encoded windows (whisper's DecodingTask takes encoder output as it
        takes mel spectrograms, and then skips the encoder)."""
        import whisper

        options = whisper.DecodingOptions(
            task=key.task,
            language=key.language if self.multilingual else "en",
            temperature=temperature,
            # greedy at 0 (beam search when asked); best-of-N samples above it, as transcribe
            best_of=BEST_OF if temperature > 0 else None,
            beam_size=beam_size if temperature == 0 and beam_size > 1 else None,
            prompt=prompt,
            fp16=self._fp16,
        )
        results = _grouped_task_class()(self._model, options).run(encoded)
        return [
            Decoded(
                tokens=[int(token) for token in result.tokens],
                text=str(result.text),
                avg_logprob=float(result.avg_logprob),
                no_speech_prob=float(result.no_speech_prob),
                temperature=temperature,
            )
            for result in results
        ]

    def _add_words(
        self, segments: list[ChunkSegment], tokenizer: Any, mel: torch.Tensor, duration: float
    ) -> None:
        from whisper.timing import add_word_timestamps

        raw: list[dict[str, Any]] = [
            {"seek": 0, "start": s.start, "end": s.end, "tokens": s.tokens} for s in segments
        ]
        add_word_timestamps(
            segments=raw,
            model=self._model,
            tokenizer=tokenizer,
            mel=mel,
            num_frames=round(duration * FRAMES_PER_SECOND),
            last_speech_timestamp=0.0,  # a chunk starts after a pause (VAD)
        )
        for segment, timed in zip(segments, raw, strict=True):
            segment.words = as_words(timed.get("words", []))
            segment.start, segment.end = float(timed["start"]), float(timed["end"])


@functools.cache
def _grouped_task_class() -> Any:
    """whisper's DecodingTask, with the audio features repeated per beam/sample.

    DecodingTask.run repeats each window's tokens n_group times (beams, or best-of samples) but
    not its encoded audio, which only broadcasts for a batch of one window. Here the encoder
    output is repeated the same way, and language detection sees one row per window, so a batch
    of any size decodes with any beam_size/best_of. Greedy decoding (n_group 1) is unchanged.
    """
    from whisper.decoding import DecodingTask

    class GroupedDecodingTask(DecodingTask):  # type: ignore[misc]  # whisper is untyped
        def _get_audio_features(self, mel: torch.Tensor) -> torch.Tensor:
            features: torch.Tensor = super()._get_audio_features(mel)
            return features.repeat_interleave(self.n_group, dim=0)

        def _detect_language(self, audio_features: torch.Tensor, tokens: torch.Tensor) -> Any:
            # The language is always given here (DecodeKey), so this only lists it per window.
            return super()._detect_language(audio_features[:: self.n_group], tokens)

    return GroupedDecodingTask
