"""faster-whisper's batched chunk decoding, as its BatchedInferencePipeline does it.

`BatchedInferencePipeline.forward` encodes a batch of feature windows in one call and generates
for all of them in one `generate` call. It is built for one clip: one tokenizer, no no-speech gate,
and no temperature fallback (its `generate` samples with top-k 1, which is greedy at any
temperature). This decoder makes the same calls on the same `WhisperModel` (`encode`,
`model.generate` over the batch, `add_word_timestamps` on the batch's encoder output), and gets the
fallback and gate from skyhigh.speech.chunk_decoder, so a batch may hold chunks of several clips.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from skyhigh.speech.chunk_decoder import (
    BEST_OF,
    ChunkSegment,
    Decoded,
    DecodeKey,
    FloatArray,
    GatePolicy,
    as_words,
    chunk_segments,
    decode_with_fallback,
)

SAMPLE_RATE = 16_000
N_SAMPLES = 30 * SAMPLE_RATE
N_FRAMES = 3000
MAX_INITIAL_TIMESTAMP_S = 1.0  # both libraries' sequential default


class FasterChunkDecoder:
    """Batched decoding on a faster_whisper.WhisperModel."""

    def __init__(self, model: Any, *, policy: GatePolicy) -> None:
        self._model = model  # faster_whisper.WhisperModel
        self._policy = policy
        self.multilingual = bool(model.model.is_multilingual)

    def _features(self, audio: FloatArray) -> np.ndarray[Any, np.dtype[np.float32]]:
        # As WhisperModel.transcribe does: pad the audio with a window of silence, take 30 s.
        features = self._model.feature_extractor(audio, padding=N_SAMPLES)
        window: np.ndarray[Any, np.dtype[np.float32]] = np.ascontiguousarray(
            features[:, :N_FRAMES], dtype=np.float32
        )
        return window

    def detect_language(self, audio: FloatArray) -> tuple[str, float]:
        encoded = self._model.encode(self._features(audio[:N_SAMPLES]))
        token, probability = self._model.model.detect_language(encoded)[0][0]
        return str(token[2:-2]), float(probability)  # "<|en|>" -> "en"

    def decode(self, audios: Sequence[FloatArray], key: DecodeKey) -> list[list[ChunkSegment]]:
        import ctranslate2
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        model = self._model
        tokenizer = Tokenizer(
            model.hf_tokenizer,
            self.multilingual,
            task=key.task,
            language=key.language if self.multilingual else "en",
        )
        features = np.stack([self._features(audio) for audio in audios])
        previous = tokenizer.encode(" " + key.initial_prompt.strip()) if key.initial_prompt else []
        prompt = model.get_prompt(tokenizer, previous_tokens=previous, without_timestamps=False)
        suppress = get_suppressed_tokens(tokenizer, [-1])
        encoded: dict[int, np.ndarray[Any, np.dtype[np.float32]]] = {}  # for word alignment

        def decode_once(indices: list[int], temperature: float) -> list[Decoded]:
            output = model.encode(features[indices])
            if key.word_timestamps:
                # Kept per chunk for the word alignment; numpy reads host memory only.
                host = (
                    output if output.device == "cpu" else output.to_device(ctranslate2.Device.cpu)
                )
                rows = np.asarray(host)
                for row, index in enumerate(indices):
                    encoded[index] = rows[row : row + 1]
            if temperature > 0:
                sampling = {
                    "beam_size": 1,
                    "num_hypotheses": BEST_OF,
                    "sampling_topk": 0,
                    "sampling_temperature": temperature,
                }
            else:
                sampling = {"beam_size": self._policy.beam_size}
            results = model.model.generate(
                output,
                [list(prompt) for _ in indices],
                max_length=model.max_length,
                return_scores=True,
                return_no_speech_prob=True,
                suppress_blank=True,
                suppress_tokens=suppress,
                max_initial_timestamp_index=round(MAX_INITIAL_TIMESTAMP_S / model.time_precision),
                **sampling,
            )
            decoded = []
            for result in results:
                tokens = [int(token) for token in result.sequences_ids[0]]
                # generate returns the length-normalized score; whisper's avg_logprob divides
                # the sum by len + 1 (the end-of-text token).
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

        chosen = decode_with_fallback(len(audios), decode_once, self._policy)

        def add_words(index: int, segments: list[ChunkSegment], duration: float) -> None:
            output = ctranslate2.StorageView.from_array(encoded[index])
            self._add_words(segments, tokenizer, output, duration)

        return chunk_segments(
            chosen,
            [len(audio) / SAMPLE_RATE for audio in audios],
            self._policy,
            timestamp_begin=tokenizer.timestamp_begin,
            decode_text=tokenizer.decode,
            add_words=add_words if key.word_timestamps else None,
        )

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
            "\"'“¿([{-",  # both libraries' default punctuation merging
            "\"'.。,，!！?？:：”)]}、",
            0.0,  # a chunk starts after a pause (VAD)
        )
        for segment, timed in zip(segments, raw, strict=True):
            segment.words = as_words(timed.get("words", []))
            segment.start, segment.end = float(timed["start"]), float(timed["end"])
