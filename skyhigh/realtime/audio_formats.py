"""Realtime input audio (OpenAI's `audio.input.format`) to 16 kHz mono float32, chunk by chunk.

`audio/pcm` is 16-bit little-endian mono at 24 kHz (OpenAI's only rate) or 16 kHz; `audio/pcmu`
and `audio/pcma` are G.711 mu-law and A-law at 8 kHz. Appends arrive in arbitrary sizes, so a
converter carries what it could not use yet (an odd byte, the resampler's history) to the next one.
Plain numpy: `audioop` is gone from Python 3.13.

Resampling is a polyphase low-pass FIR (the filter scipy.signal.resample_poly designs), run as
a stream. Linear interpolation, what came before, lets everything above 8 kHz alias into the
speech band; the VAD then heard pauses differently (more, shorter turns) and Whisper misheard
more words (BENCHMARKS.md "Live").
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

from skyhigh.speech.samples import SAMPLE_RATE, FloatArray

PCM: Final = "audio/pcm"
PCMU: Final = "audio/pcmu"
PCMA: Final = "audio/pcma"
PCM_RATES: Final = (24_000, 16_000)
Float64Array = npt.NDArray[np.float64]


def _mulaw_table() -> FloatArray:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84
    values = np.where(sign != 0, -magnitude, magnitude)
    return (values / 32768.0).astype(np.float32)


def _alaw_table() -> FloatArray:
    codes = np.arange(256, dtype=np.int32) ^ 0x55
    sign = codes & 0x80
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = np.where(
        exponent == 0, (mantissa << 4) + 8, ((mantissa << 4) + 0x108) << (exponent - 1)
    )
    values = np.where(sign != 0, magnitude, -magnitude)
    return (values / 32768.0).astype(np.float32)


_G711: Final = {PCMU: _mulaw_table(), PCMA: _alaw_table()}


class AudioConverter:
    """One session's input format; `convert` turns each append into 16 kHz samples."""

    def __init__(self, media_type: str = PCM, rate: int = 24_000) -> None:
        if media_type == PCM and rate not in PCM_RATES:
            raise ValueError(f"audio/pcm rate must be one of {PCM_RATES}, not {rate}")
        if media_type not in (PCM, PCMU, PCMA):
            raise ValueError(f"unsupported audio format {media_type!r}")
        self.media_type = media_type
        self.rate = rate if media_type == PCM else 8_000
        self._odd_byte = b""
        # 24k -> 16k is 2:3, 8k -> 16k is 2:1.
        self._resampler = PolyphaseResampler(2, 3 if self.rate == 24_000 else 1)

    @property
    def bytes_per_second(self) -> int:
        return self.rate * (2 if self.media_type == PCM else 1)

    def convert(self, data: bytes) -> FloatArray:
        if self.media_type == PCM:
            data = self._odd_byte + data
            usable = len(data) - len(data) % 2
            self._odd_byte = data[usable:]
            samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / 32768.0
        else:
            samples = _G711[self.media_type][np.frombuffer(data, dtype=np.uint8)]
        if self.rate == SAMPLE_RATE:
            return samples
        return self._resampler.feed(samples)


def lowpass(up: int, down: int) -> Float64Array:
    """resample_poly's default filter: a Kaiser (beta 5) windowed sinc, 10 taps per phase of the
    larger rate either side, cut off at the lower Nyquist, gain `up` (zero-stuffing divides)."""
    larger = max(up, down)
    half = 10 * larger
    taps = np.arange(-half, half + 1, dtype=np.float64)
    h: Float64Array = np.sinc(taps / larger) * np.kaiser(2 * half + 1, 5.0)
    gain: Float64Array = h / h.sum() * up
    return gain


class PolyphaseResampler:
    """Resample by up/down in pieces: the same output as one pass over the whole stream.

    Output sample m sits at input position m * down / up (no delay: the filter is centred), so
    it needs input up to (m * down + half) / up; it is made once that input has arrived, and the
    input still needed by later outputs is kept. Before the first sample the stream is zeros,
    as resample_poly pads it. Only the last few output samples (under a millisecond at 24 kHz)
    wait for input that may never come, which a live turn does not miss.
    """

    def __init__(self, up: int, down: int) -> None:
        self.up, self.down = up, down
        self._h = lowpass(up, down)
        self._half = (len(self._h) - 1) // 2
        history = -(-2 * self._half // up) + 1  # inputs one output's filter spans, rounded up
        self._kept = np.zeros(history, dtype=np.float64)  # input from `_first` on
        self._first = -history  # stream index of `_kept[0]`
        self._next = 0  # the next output sample's index

    def feed(self, samples: FloatArray) -> FloatArray:
        up, down, half = self.up, self.down, self._half
        kept = np.concatenate([self._kept, samples.astype(np.float64)])
        end = self._first + len(kept)  # one past the last input sample
        last = ((end - 1) * up - half) // down  # the last output whose input has all arrived
        if last < self._next:
            self._kept = kept
            return np.zeros(0, dtype=np.float32)
        stuffed = np.zeros(len(kept) * up, dtype=np.float64)
        stuffed[::up] = kept
        # filtered[q] is output m for q = m * down + half - first * up ("full" convolution).
        filtered = np.convolve(stuffed, self._h)
        outputs = np.arange(self._next, last + 1)
        out = filtered[outputs * down + half - self._first * up].astype(np.float32)
        self._next = last + 1
        # Keep the input from the first one the next output's filter reaches.
        needed = (self._next * down - half) // up
        drop = max(0, needed - self._first)
        self._kept, self._first = kept[drop:], self._first + drop
        return out
