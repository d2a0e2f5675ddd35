"""faster-whisper (CTranslate2): the engine's transcriber and its batched chunk decoder.

Weights are a CTranslate2 directory, loaded as they are (skyhigh.speech.weights).

Batched chunks, as faster-whisper's BatchedInferencePipeline does them: `forward` encodes a batch
of feature windows in one call and generates for all of them in one `generate` call. That
pipeline is built for one clip: one tokenizer, no no-speech gate, and no temperature fallback (its
`generate` samples with top-k 1, which is greedy at any temperature). The decoder here makes the
same calls on the same `WhisperModel` (`encode`, `model.generate` over the batch,
`add_word_timestamps` on the batch's encoder output) and gets the fallback and gate from
skyhigh.speech.chunk_decoder, so a batch may hold chunks of several clips. CTranslate2's
`generate` expands beams and best-of samples per batch row itself (unlike whisper.decode), so
chunks that need fallback decode together safely.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from typing import Any, Final, Self

import numpy as np

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
from skyhigh.speech.samples import SAMPLE_RATE, WINDOW_FRAMES, WINDOW_SAMPLES, FloatArray
from skyhigh.speech.threads import available_cores
from skyhigh.speech.weights import ResolvedModel

MAX_INITIAL_TIMESTAMP_S: Final = 1.0  # both libraries' sequential default
# Both libraries' default punctuation merging for word timestamps.
PREPEND_PUNCTUATIONS: Final = "\"'“¿([{-"
APPEND_PUNCTUATIONS: Final = "\"'.。,，!！?？:：”)]}、"


@register_engine
class FasterWhisperTranscriber(WhisperTranscriber):
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

        if resolved.ct2_dir is None or resolved.sha256 is None:
            raise ValueError(f"{resolved.name}: faster-whisper needs a CTranslate2 directory")
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
        decoder = FasterChunkDecoder(self._model, policy=decoding.policy)
        super().__init__(
            model_name=resolved.name, sha256=resolved.sha256, decoder=decoder, decoding=decoding
        )

    @classmethod
    def load(cls, resolved: ResolvedModel, settings: SpeechSettings) -> Self:
        return cls(
            resolved,
            decoding=DecodingSettings.from_settings(settings),
            device=settings.whisper_device,
            compute_type=settings.whisper_compute_type,
            cpu_threads=settings.whisper_cpu_threads,
        )

    def _transcribe_windows(
        self,
        audio: FloatArray,
        options: TranscribeOptions,
        language: str,
        emit: RawSegmentSink,
        deadline: Deadline | None,
    ) -> None:
        d = self._decoding
        raw_segments, _ = self._model.transcribe(
            audio,
            language=language,
            task=options.task,
            beam_size=options.beam_size or d.beam_size,
            best_of=BEST_OF,
            temperature=list(d.temperatures),
            compression_ratio_threshold=COMPRESSION_RATIO_THRESHOLD,
            # faster-whisper applies whisper's no-speech gate per window, like openai-whisper.
            log_prob_threshold=d.logprob_threshold,
            no_speech_threshold=d.no_speech_threshold,
            condition_on_previous_text=d.condition_on_previous_text,
            initial_prompt=options.initial_prompt,
            word_timestamps=options.word_timestamps,
            vad_filter=False,
        )
        for raw in raw_segments:  # a generator: each window is decoded as we iterate
            emit(dataclasses.asdict(raw))
            check(deadline)


class FasterChunkDecoder:
    """Batched decoding on a faster_whisper.WhisperModel."""

    def __init__(self, model: Any, *, policy: GatePolicy) -> None:
        self._model = model  # faster_whisper.WhisperModel
        self._policy = policy
        self.multilingual = bool(model.model.is_multilingual)
        # (digest of the audio, its encoder output) of the last language detection
        self._detected: tuple[bytes, FloatArray] | None = None

    def _features(self, audio: FloatArray) -> FloatArray:
        # As WhisperModel.transcribe does: pad the audio with a window of silence, take 30 s.
        features = self._model.feature_extractor(audio, padding=WINDOW_SAMPLES)
        window: FloatArray = np.ascontiguousarray(features[:, :WINDOW_FRAMES], dtype=np.float32)
        return window

    def _encode(self, features: FloatArray) -> FloatArray:
        """The encoder's output for a batch of windows, on the host (numpy reads only that)."""
        import ctranslate2

        output = self._model.encode(features)
        host = output if output.device == "cpu" else output.to_device(ctranslate2.Device.cpu)
        encoded: FloatArray = np.asarray(host)
        return encoded

    def detect_language(self, audio: FloatArray) -> tuple[str, float]:
        import ctranslate2

        window = audio[:WINDOW_SAMPLES]
        encoded = self._encode(self._features(window)[np.newaxis])
        # The clip's first chunk is what language detection hears; its decode reuses this window.
        self._detected = (_digest(window), encoded)
        output = ctranslate2.StorageView.from_array(encoded)
        token, probability = self._model.model.detect_language(output)[0][0]
        return str(token[2:-2]), float(probability)  # "<|en|>" -> "en"

    def _encode_chunks(self, audios: Sequence[FloatArray]) -> FloatArray:
        """Each chunk's encoder output, once per decode: every temperature of the fallback and
        the word alignment use it (the first chunk's may come from language detection)."""
        detected, self._detected = self._detected, None
        reuse = -1
        if detected is not None:
            digest, _ = detected
            reuse = next((i for i, a in enumerate(audios) if _digest(a) == digest), -1)
        todo = [i for i in range(len(audios)) if i != reuse]
        rows = self._encode(np.stack([self._features(audios[i]) for i in todo])) if todo else None
        parts = [] if rows is None else list(rows)
        if detected is not None and reuse >= 0:
            parts.insert(reuse, detected[1][0])
        return np.stack(parts)

    def decode(self, audios: Sequence[FloatArray], key: DecodeKey) -> list[list[ChunkSegment]]:
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer

        tokenizer = Tokenizer(
            self._model.hf_tokenizer,
            self.multilingual,
            task=key.task,
            language=key.language if self.multilingual else "en",
        )
        encoded = self._encode_chunks(audios)
        policy = key.policy(self._policy)

        def decode_once(indices: list[int], temperature: float) -> list[Decoded]:
            return self._decode_once(
                encoded[indices], len(indices), key, tokenizer, temperature, policy.beam_size
            )

        chosen = decode_with_fallback(len(audios), decode_once, policy)

        def add_words(index: int, segments: list[ChunkSegment], duration: float) -> None:
            output = ctranslate2.StorageView.from_array(encoded[index : index + 1])
            self._add_words(segments, tokenizer, output, duration)

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
        encoded: FloatArray,
        count: int,
        key: DecodeKey,
        tokenizer: Any,
        temperature: float,
        beam_size: int,
    ) -> list[Decoded]:
        import ctranslate2

        model = self._model
        output = ctranslate2.StorageView.from_array(np.ascontiguousarray(encoded))
        results = model.model.generate(
            output,
            [self._prompt(tokenizer, key) for _ in range(count)],
            max_length=model.max_length,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=_suppressed(tokenizer),
            max_initial_timestamp_index=round(MAX_INITIAL_TIMESTAMP_S / model.time_precision),
            **self._sampling(temperature, beam_size),
        )
        decoded = []
        for result in results:
            tokens = [int(token) for token in result.sequences_ids[0]]
            # generate returns the length-normalized score; whisper's avg_logprob divides the
            # sum by len + 1 (the end-of-text token).
            avg_logprob = result.scores[0] * len(tokens) / (len(tokens) + 1)
            decoded.append(
                Decoded(
                    tokens=tokens,
                    text=tokenizer.decode(tokens).strip(),
                    avg_logprob=float(avg_logprob),
                    no_speech_prob=float(result.no_speech_prob),
                    temperature=temperature,
                )
            )
        return decoded

    def _prompt(self, tokenizer: Any, key: DecodeKey) -> list[int]:
        previous = tokenizer.encode(" " + key.initial_prompt.strip()) if key.initial_prompt else []
        prompt: list[int] = self._model.get_prompt(
            tokenizer, previous_tokens=previous, without_timestamps=False
        )
        return prompt

    @staticmethod
    def _sampling(temperature: float, beam_size: int) -> dict[str, Any]:
        if temperature > 0:  # best-of-N samples, as faster-whisper's sequential fallback
            return {
                "beam_size": 1,
                "num_hypotheses": BEST_OF,
                "sampling_topk": 0,
                "sampling_temperature": temperature,
            }
        return {"beam_size": beam_size}

    def _add_words(
        self, segments: list[ChunkSegment], tokenizer: Any, encoded: Any, duration: float
    ) -> None:
        raw: list[dict[str, Any]] = [
            {"seek": 0, "start": s.start, "end": s.end, "tokens": s.tokens} for s in segments
        ]
        self._model.add_word_timestamps(
            [raw],
            tokenizer,
            encoded,
            round(duration * self._model.frames_per_second),
            PREPEND_PUNCTUATIONS,
            APPEND_PUNCTUATIONS,
            0.0,  # a chunk starts after a pause (VAD)
        )
        for segment, timed in zip(segments, raw, strict=True):
            segment.words = as_words(timed.get("words", []))
            segment.start, segment.end = float(timed["start"]), float(timed["end"])


def _digest(audio: FloatArray) -> bytes:
    return hashlib.blake2b(np.ascontiguousarray(audio).data, digest_size=16).digest()


def _suppressed(tokenizer: Any) -> list[int]:
    from faster_whisper.transcribe import get_suppressed_tokens

    suppressed: list[int] = get_suppressed_tokens(tokenizer, [-1])
    return suppressed
