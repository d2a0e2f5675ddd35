"""Realtime input audio (OpenAI's `audio.input.format`) to 16 kHz mono float32, chunk by chunk.

`audio/pcm` is 16-bit little-endian mono at 24 kHz (OpenAI's only rate) or 16 kHz; `audio/pcmu`
and `audio/pcma` are G.711 mu-law and A-law at 8 kHz. Appends arrive in arbitrary sizes, so a
converter carries what it could not use yet (an odd byte, a resampling phase) to the next one.
Plain numpy: `audioop` is gone from Python 3.13.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from skyhigh.speech.samples import SAMPLE_RATE, FloatArray

PCM: Final = "audio/pcm"
PCMU: Final = "audio/pcmu"
PCMA: Final = "audio/pcma"
PCM_RATES: Final = (24_000, 16_000)


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
        self._pending = np.zeros(0, dtype=np.float32)  # input samples not yet resampled

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
        return self._resample(samples)

    def _resample(self, samples: FloatArray) -> FloatArray:
        # Rational ratios only (24k -> 16k is 3:2, 8k -> 16k is 1:2): whole input groups map to
        # whole output groups, so chunk boundaries leave no seams; the remainder waits.
        up, down = (2, 3) if self.rate == 24_000 else (2, 1)
        joined = np.concatenate([self._pending, samples])
        groups = len(joined) // down
        if groups == 0:
            self._pending = joined
            return np.zeros(0, dtype=np.float32)
        # One sample of look-ahead for interpolation: keep it for the next call.
        usable = groups * down
        if usable == len(joined):
            groups -= 1
            usable -= down
            if groups == 0:
                self._pending = joined
                return np.zeros(0, dtype=np.float32)
        positions = np.arange(groups * up, dtype=np.float64) * (down / up)
        out: FloatArray = np.interp(positions, np.arange(usable + 1), joined[: usable + 1]).astype(
            np.float32
        )
        self._pending = joined[usable:]
        return out
