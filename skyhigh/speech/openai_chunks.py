"""openai-whisper's batched chunk decoding: one `whisper.decode` over a batch of mel windows.

`whisper.decode` takes a batch of 30-second log-mel windows (B, n_mels, 3000) and decodes them
together (greedy, beam search or best-of-N sampling per row); `whisper.transcribe` only ever hands
it one. Everything around it (fallback, gate, segments) is skyhigh.speech.chunk_decoder's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

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
FRAMES_PER_SECOND = 100  # mel frames


class OpenAIChunkDecoder:
    """Batched decoding on an openai-whisper model (use from one thread at a time)."""

    def __init__(self, model: Any, *, policy: GatePolicy, fp16: bool) -> None:
        self._model = model
        self._policy = policy
        self._fp16 = fp16
        self.multilingual = bool(model.is_multilingual)

    def _mel(self, audio: FloatArray) -> torch.Tensor:
        import whisper
        from whisper.audio import N_FRAMES, N_SAMPLES

        # As whisper.transcribe does: pad the audio with a window of silence, then take 30 s.
        mel = whisper.log_mel_spectrogram(audio, self._model.dims.n_mels, padding=N_SAMPLES)
        dtype = torch.float16 if self._fp16 else torch.float32
        window: torch.Tensor = whisper.pad_or_trim(mel, N_FRAMES).to(self._model.device).to(dtype)
        return window

    def detect_language(self, audio: FloatArray) -> tuple[str, float]:
        from whisper.audio import N_SAMPLES

        _, probs = self._model.detect_language(self._mel(audio[:N_SAMPLES]))
        language = max(probs, key=probs.get)
        return str(language), float(probs[language])

    def decode(self, audios: Sequence[FloatArray], key: DecodeKey) -> list[list[ChunkSegment]]:
        import whisper
        from whisper.tokenizer import get_tokenizer

        model = self._model
        tokenizer = get_tokenizer(
            self.multilingual,
            num_languages=model.num_languages,
            language=key.language,
            task=key.task,
        )
        mels = torch.stack([self._mel(audio) for audio in audios])
        prompt = tokenizer.encode(" " + key.initial_prompt.strip()) if key.initial_prompt else None
        beam_size = self._policy.beam_size

        def decode_once(indices: list[int], temperature: float) -> list[Decoded]:
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
            results = whisper.decode(model, mels[indices], options)
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

        chosen = decode_with_fallback(len(audios), decode_once, self._policy)

        def add_words(index: int, segments: list[ChunkSegment], duration: float) -> None:
            self._add_words(segments, tokenizer, mels[index], duration)

        return chunk_segments(
            chosen,
            [len(audio) / SAMPLE_RATE for audio in audios],
            self._policy,
            timestamp_begin=tokenizer.timestamp_begin,
            decode_text=tokenizer.decode,
            add_words=add_words if key.word_timestamps else None,
        )

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
