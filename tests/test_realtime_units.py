"""Realtime pieces on their own: formats, streaming VAD, stable prefixes, secrets, admission, quota.

The real thing (a server, a socket, the SDK) is tests/test_realtime.py; these pin the parts whose
edge cases a stream rarely hits.
"""

from __future__ import annotations

import itertools
import time
from typing import Any

import anyio
import numpy as np
import pytest

from skyhigh.config import RealtimeSettings, Settings
from skyhigh.domain.errors import QuotaExceeded
from skyhigh.domain.tenancy import Principal
from skyhigh.intake.quotas import InProcessCounters, Quotas
from skyhigh.realtime.admission import Refused, SessionAdmission
from skyhigh.realtime.audio_formats import PCMA, PCMU, AudioConverter, PolyphaseResampler
from skyhigh.realtime.client_secrets import ClientSecrets
from skyhigh.realtime.engine import RealtimeEngine
from skyhigh.realtime.metering import AudioMeter
from skyhigh.realtime.turns import SileroStream, StablePrefix, StreamingVad, VadConfig
from skyhigh.speech.protocol import TranscribeOptions
from skyhigh.speech.samples import SAMPLE_RATE
from skyhigh.speech.vad import VadOptions, speech_spans
from tests.support.realtime import pcm16
from tests.support.settings import DATA, model_cache_dir


def _sine(rate: int, seconds: float, hz: float = 440.0) -> np.ndarray:
    t = np.arange(int(rate * seconds)) / rate
    return (0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32)


@pytest.mark.parametrize("rate", [24_000, 16_000])
def test_pcm_in_odd_sized_pieces_equals_one_piece(rate: int) -> None:
    data = (_sine(rate, 1.0) * 32767).astype("<i2").tobytes()
    whole = AudioConverter("audio/pcm", rate).convert(data)
    pieces = AudioConverter("audio/pcm", rate)
    parts = [pieces.convert(data[i : i + 777]) for i in range(0, len(data), 777)]
    joined = np.concatenate(parts)
    # The resampler's filter looks 30 input samples ahead: the last 10 outputs wait for more.
    assert abs(len(joined) - SAMPLE_RATE) <= 10 and abs(len(whole) - SAMPLE_RATE) <= 10
    n = min(len(whole), len(joined))
    assert np.allclose(whole[:n], joined[:n], atol=1e-6)


def _rms(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))


@pytest.mark.parametrize("hz,kept", [(1_000, True), (6_000, True), (10_000, False)])
def test_24k_pcm_keeps_the_speech_band_and_drops_what_would_alias(hz: float, kept: bool) -> None:
    # 16 kHz holds up to 8 kHz: a 10 kHz tone at 24 kHz would fold to 6 kHz (linear
    # interpolation passed it at -3 dB). The low-pass keeps the band and removes the rest.
    data = (_sine(24_000, 1.0, hz) * 32767).astype("<i2").tobytes()
    pieces = AudioConverter("audio/pcm", 24_000)
    out = np.concatenate([pieces.convert(data[i : i + 4_800]) for i in range(0, len(data), 4_800)])
    level = _rms(out[1_000:-1_000]) / _rms(_sine(16_000, 1.0, hz))
    assert (0.97 < level < 1.03) if kept else (level < 0.01), level


def test_resampled_pieces_equal_one_pass_exactly() -> None:
    noise = np.random.default_rng(7).uniform(-0.5, 0.5, 24_000).astype(np.float32)
    for up, down in [(2, 3), (2, 1)]:
        whole = PolyphaseResampler(up, down).feed(noise)
        stream = PolyphaseResampler(up, down)
        sizes = [1, 2, 3, 1_600, 5, 777, 2_400]
        parts, start = [], 0
        for i in itertools.count():
            if start >= len(noise):
                break
            parts.append(stream.feed(noise[start : start + sizes[i % len(sizes)]]))
            start += sizes[i % len(sizes)]
        joined = np.concatenate(parts)
        assert len(joined) == len(whole) >= len(noise) * up // down - 21
        assert np.array_equal(joined, whole)


@pytest.mark.parametrize("codec,media_type", [("mulaw", PCMU), ("alaw", PCMA)])
def test_g711_decodes_to_the_recording(codec: str, media_type: str) -> None:
    # ffmpeg encodes; we decode: the result must match ffmpeg's own 16 kHz PCM closely.
    encoded = pcm16(DATA / "jfk.wav", 8_000, codec=codec)
    ours = AudioConverter(media_type).convert(encoded)
    reference = np.frombuffer(pcm16(DATA / "jfk.wav", 8_000), dtype="<i2") / 32768.0
    assert abs(len(ours) - 2 * len(reference)) <= 21  # the filter's look-ahead (1.3 ms)
    error = ours[::2][: len(reference)] - reference[: len(ours[::2])]
    assert float(np.sqrt(np.mean(error**2))) < 0.01


def test_unsupported_formats_are_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        AudioConverter("audio/pcm", 44_100)
    with pytest.raises(ValueError, match="unsupported"):
        AudioConverter("audio/opus")


def test_streaming_vad_finds_the_speech_offline_vad_finds() -> None:
    audio = np.frombuffer(pcm16(DATA / "jfk.wav", 16_000), dtype="<i2").astype(np.float32) / 32768
    audio = np.concatenate(
        [np.zeros(SAMPLE_RATE, np.float32), audio, np.zeros(SAMPLE_RATE, np.float32)]
    )
    vad = StreamingVad(VadConfig(threshold=0.3, silence_duration_ms=500))
    boundaries = []
    for start in range(0, len(audio), 1600):  # 100 ms appends
        boundaries += vad.feed(audio[start : start + 1600])
    starts = [b.sample for b in boundaries if b.kind == "start"]
    stops = [b.sample for b in boundaries if b.kind == "stop"]
    assert starts and len(stops) == len(starts)
    offline = speech_spans(audio, VadOptions(threshold=0.3, min_silence_ms=500, speech_pad_ms=0))
    # The first start and the last stop agree with one pass over the clip within 100 ms.
    assert abs(starts[0] - offline[0][0]) < 0.1 * SAMPLE_RATE
    assert abs(stops[-1] - offline[-1][1]) < 0.1 * SAMPLE_RATE


def test_silero_fed_in_appends_gives_the_probabilities_of_one_pass() -> None:
    # Silero's recurrent state runs through the stream: a VAD that forgot it at every append
    # heard pauses inside words and cut turns there.
    from faster_whisper.vad import get_vad_model

    audio = np.frombuffer(pcm16(DATA / "sonnet1.flac", 16_000), dtype="<i2")[: 512 * 600]
    audio = audio.astype(np.float32) / 32768
    one_pass = np.asarray(get_vad_model()(audio)).reshape(-1)
    stream = SileroStream()
    pieces = [stream(audio[i : i + 1_536]) for i in range(0, len(audio), 1_536)]
    assert np.allclose(np.concatenate(pieces), one_pass, atol=1e-5)


def test_stable_prefix_sends_only_words_two_decodes_agree_on() -> None:
    prefix = StablePrefix()
    assert prefix.update("and so my") == ""
    assert prefix.update("and so my fellow") == "and so my"
    assert prefix.update("and so my fellow Americans") == " fellow"
    assert prefix.update("and so, my fellow Americans ask") == ""  # changed its mind: wait
    assert prefix.update("and so, my fellow Americans ask not") == ""
    assert prefix.sent == ["and", "so", "my", "fellow"]


def test_stable_prefix_sends_settled_words_after_one_decode() -> None:
    prefix = StablePrefix()
    # Word timestamps say the first two words end well before the audio does: out at once.
    assert prefix.update(["And", "so", "my"], settled=2) == "And so"
    assert prefix.update(["And", "so", "my", "fellow"], settled=2) == " my"  # agreement
    assert prefix.update(["And", "so", "me"], settled=3) == ""  # contradicts what was sent
    assert prefix.sent == ["And", "so", "my"]


def test_a_partial_decode_has_word_end_times_within_its_audio(jfk: np.ndarray) -> None:
    settings = Settings(realtime_enabled=True, model_cache_dir=model_cache_dir())
    engine = RealtimeEngine.load(settings)
    try:
        audio = jfk[: 4 * SAMPLE_RATE]
        words = anyio.run(lambda: engine.decode_words(audio, language="en", prompt=None))
    finally:
        engine.close()
    text = " ".join(w.word for w in words).lower()
    assert "fellow americans" in text, words
    ends = [w.end for w in words]
    assert ends == sorted(ends) and 0 < ends[0] and ends[-1] <= 4.0, words


def test_partials_decode_greedily_and_finals_with_the_final_beam(
    jfk: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings(
        realtime_enabled=True, realtime_final_beam_size=4, model_cache_dir=model_cache_dir()
    )
    engine = RealtimeEngine.load(settings)
    asked: list[int | None] = []
    transcribe = engine.pool.transcribe

    def recording(audio: np.ndarray, options: TranscribeOptions, **kwargs: Any) -> Any:
        asked.append(options.beam_size)
        return transcribe(audio, options, **kwargs)

    monkeypatch.setattr(engine.pool, "transcribe", recording)
    try:
        audio = jfk[: 4 * SAMPLE_RATE]
        anyio.run(lambda: engine.decode_words(audio, language="en", prompt=None))
        final = anyio.run(lambda: engine.decode(audio, language="en", prompt=None))
    finally:
        engine.close()
    assert asked == [1, 4]
    assert "fellow americans" in final.lower(), final


def test_client_secret_is_single_use_and_expires() -> None:
    secrets = ClientSecrets(ttl_s=600)
    principal = Principal.static()
    minted = secrets.mint(principal)
    assert minted.value.startswith("ek_")
    assert secrets.redeem(minted.value) == principal
    assert secrets.redeem(minted.value) is None  # reused
    short = secrets.mint(principal, ttl_s=1)
    assert short.expires_at <= time.time() + 1
    time.sleep(1.1)
    assert secrets.redeem(short.value) is None  # expired
    assert secrets.redeem("ek_never-minted") is None


def test_admission_caps_per_principal_per_server_and_on_lag() -> None:
    settings = RealtimeSettings(
        realtime_sessions_per_principal=1, realtime_max_sessions=2, realtime_max_lag_s=1.0
    )
    admission = SessionAdmission(settings)
    lag = [0.0]
    with admission.admit("a", lambda: lag[0]):
        with pytest.raises(Refused, match="REALTIME_SESSIONS_PER_PRINCIPAL"):
            admission.check("a")
        lag[0] = 2.0
        with pytest.raises(Refused, match="REALTIME_MAX_LAG_S"):
            admission.check("b")
        lag[0] = 0.0
        with admission.admit("b", lambda: 0.0):
            with pytest.raises(Refused, match="REALTIME_MAX_SESSIONS"):
                admission.check("c")
    admission.check("a")  # places are given back


class _CountedCounters(InProcessCounters):
    """In-process counters that count their operations, and can be made to fail."""

    def __init__(self) -> None:
        super().__init__()
        self.operations = 0
        self.down = False

    async def add(self, key: str, amount: float, *, ttl_s: int) -> float:
        if self.down:
            raise ConnectionError("the counters are unreachable")
        self.operations += 1
        return await super().add(key, amount, ttl_s=ttl_s)


def test_a_session_is_charged_a_second_at_a_time_until_the_quota_ends_it() -> None:
    counters = _CountedCounters()
    settings = Settings(_env_file=None, audio_minutes_per_hour=0.1)  # type: ignore[call-arg]
    quotas = Quotas(counters, settings.intake)
    meter = AudioMeter(quotas, "ann")
    appended = 0  # 100 ms appends of 16 kHz audio, as the spool counts them

    async def stream_until_refused() -> None:
        nonlocal appended
        with pytest.raises(QuotaExceeded, match="AUDIO_MINUTES_PER_HOUR") as refused:
            while appended < 200:
                appended += 1
                await meter.track(appended * 1600 / SAMPLE_RATE)
        assert "0.12 of 0.1 audio minutes used this hour" in str(refused.value)

    anyio.run(stream_until_refused)
    assert appended == 70 and counters.operations == 7  # seven seconds, seven charges
    assert meter.charged_s == 7.0  # the batch that passed the limit is charged too

    async def outage_then_settle() -> None:
        counters.down = True
        await meter.track(8.0)  # not counted, and the session is not ended for it
        assert meter.charged_s == 7.0
        counters.down = False
        await meter.settle(8.5)  # past the limit: settling never raises
        with pytest.raises(QuotaExceeded, match=r"0\.14 of 0\.1 audio minutes"):  # 8.5 s
            await quotas.check_audio("ann")

    anyio.run(outage_then_settle)
    assert meter.charged_s == 8.5
