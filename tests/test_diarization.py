"""Diarization on real multi-speaker conversations (tests/conversations.py builds them and defines
DER): the bundled speaker model and its ONNX export, speaker counts, hints, known speakers, and
speakers on segments and words."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import pytest

from skyhigh.speech.diarization import (
    Diarizer,
    KnownSpeaker,
    SpeakerHints,
    Turn,
    assign_speakers,
    features,
    pipeline,
    talk_time,
)
from skyhigh.speech.diarization import encoder as encoder_module
from skyhigh.speech.diarization.encoder import TorchSpeakerEncoder
from skyhigh.speech.diarization.onnx_model import (
    MIN_COSINE,
    OnnxSpeakerEncoder,
    ensure_speaker_onnx,
)
from skyhigh.speech.diarization.service import DIARIZATION_VAD
from skyhigh.speech.vad import speech_spans
from skyhigh.speech.weights import ModelChecksumError
from tests.conversations import Conversation, conversations, der, utterances
from tests.support.settings import model_cache_dir
from tests.support.torch_free import torch_free_diarization

MAX_DER = 0.15


@cache
def onnx_encoder() -> OnnxSpeakerEncoder:
    return OnnxSpeakerEncoder(ensure_speaker_onnx(cache_dir=model_cache_dir()))


def vad_regions(conversation: Conversation) -> list[tuple[float, float]]:
    spans = speech_spans(conversation.audio, DIARIZATION_VAD)
    return [(start / 16_000, end / 16_000) for start, end in spans]


def hypothesis(turns: list[Turn]) -> list[tuple[float, float, str]]:
    return [(turn.start, turn.end, turn.speaker) for turn in turns]


def real_windows() -> list[np.ndarray]:
    """1.6 s windows of every speaker's utterances, and some shorter ones."""
    windows = []
    for speaker in ("jfk", "sonnet", "austen"):
        for utterance in utterances(speaker):
            windows.append(utterance.audio[: int(1.6 * 16_000)])
            windows.append(utterance.audio[-int(0.7 * 16_000) :])
    return windows


def test_onnx_export_agrees_with_torch_on_real_speech() -> None:
    windows = real_windows()
    torch_embeddings = TorchSpeakerEncoder().embed(windows)
    onnx_embeddings = onnx_encoder().embed(windows)
    cosine = np.sum(torch_embeddings * onnx_embeddings, axis=1)
    assert len(windows) >= 20
    assert float(cosine.min()) >= MIN_COSINE, cosine.min()


def test_weights_are_checksum_verified(monkeypatch: pytest.MonkeyPatch) -> None:
    assert encoder_module.bundled_weights().name == "pretrained.pt"
    monkeypatch.setattr(encoder_module, "WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(ModelChecksumError, match="checksum mismatch"):
        encoder_module.bundled_weights()


@pytest.mark.parametrize("conversation", conversations(), ids=lambda c: c.name)
def test_der_and_speaker_count(conversation: Conversation) -> None:
    turns = Diarizer(onnx_encoder()).diarize(conversation.audio, vad_regions(conversation))
    error = der(conversation.turns, hypothesis(turns))
    assert {turn.speaker for turn in turns} == {
        f"SPEAKER_{n:02d}" for n in range(len(conversation.speakers))
    }
    assert error <= MAX_DER, error


def test_der_definition() -> None:
    reference = [(0.0, 2.0, "a"), (3.0, 5.0, "b")]
    assert der(reference, [(0.0, 2.0, "x"), (3.0, 5.0, "y")]) == 0.0
    # Scored: a's [0.25, 1.75) and b's [3.25, 4.75), the collars around each boundary left out.
    # All given to one speaker: b's 1.5 s are confusion, the scored pause [2.25, 2.75) a false
    # alarm.
    assert der(reference, [(0.0, 5.0, "x")]) == pytest.approx((1.5 + 0.5) / 3.0)
    assert der(reference, []) == 1.0  # all missed
    # Speech where there is none counts as false alarm (up to the collar).
    assert der(reference, [(0.0, 2.0, "x"), (2.0, 5.0, "y")]) == pytest.approx(0.5 / 3.0)


def test_hints_set_the_speaker_count() -> None:
    conversation = conversations()[2]  # three speakers
    regions = vad_regions(conversation)
    diarizer = Diarizer(onnx_encoder())
    for hints, count in (
        (SpeakerHints(num_speakers=2), 2),
        (SpeakerHints(max_speakers=1), 1),
        (SpeakerHints(min_speakers=4), 4),
    ):
        turns = diarizer.diarize(conversation.audio, regions, hints=hints)
        assert len({turn.speaker for turn in turns}) == count, hints
    with pytest.raises(ValueError, match="min_speakers"):
        SpeakerHints(min_speakers=3, max_speakers=2)


def test_known_speakers_are_named() -> None:
    conversation = conversations()[2]
    # References from recordings not in the conversation where there are some: the last austen
    # utterance and the sonnet's closing lines are never reached by its twelve turns.
    known = [
        KnownSpeaker("Marianne", utterances("austen")[-1].audio),
        KnownSpeaker("Reader", utterances("sonnet")[-1].audio),
    ]
    turns = Diarizer(onnx_encoder()).diarize(
        conversation.audio, vad_regions(conversation), known_speakers=known
    )
    named = {"austen": "Marianne", "sonnet": "Reader"}
    renamed = [(s, e, named.get(speaker, speaker)) for s, e, speaker in conversation.turns]
    assert {turn.speaker for turn in turns} == {"Marianne", "Reader", "SPEAKER_02"}
    # Named by similarity, not matched after the fact: DER with the names taken literally.
    hyp = [
        (s, e, "jfk" if speaker == "SPEAKER_02" else speaker) for s, e, speaker in hypothesis(turns)
    ]
    assert der(renamed, hyp) <= MAX_DER


@dataclass
class Word:
    start: float
    end: float
    word: str


@dataclass
class Segment:
    start: float
    end: float
    text: str
    words: list[Word] | None


def test_segments_split_at_a_speaker_change() -> None:
    turns = [Turn(0.0, 2.0, "A"), Turn(2.4, 5.0, "B")]
    words = [
        Word(0.1, 0.5, " Hello"),
        Word(0.6, 1.9, " there."),
        Word(2.5, 3.0, " Hi"),
        Word(3.1, 3.5, " back."),
    ]
    segments = [
        Segment(0.0, 3.6, " Hello there. Hi back.", words),
        Segment(3.8, 4.9, " No words here.", None),
        Segment(5.5, 6.0, " After the last turn.", None),
    ]
    pieces = assign_speakers(segments, turns)
    assert [(p.text, p.speaker, p.source) for p in pieces] == [
        ("Hello there.", "A", 0),
        ("Hi back.", "B", 0),
        (" No words here.", "B", 1),
        (" After the last turn.", "B", 2),
    ]
    assert (pieces[0].start, pieces[0].end, pieces[1].start, pieces[1].end) == (0.0, 1.9, 2.5, 3.6)
    assert [w.speaker for w in pieces[1].words] == ["B", "B"]
    assert talk_time(turns) == {"A": 2.0, "B": 2.6}


def test_batched_features_embed_each_window_as_alone() -> None:
    # Features are made batch by batch, batches grouped by the frame count a window's length
    # gives: each row must be what that window embeds to on its own, in the input order.
    windows = real_windows()
    assert all(features.frame_count(len(w)) == len(features.mel_frames(w)) for w in windows[:6]), (
        "frame_count disagrees with mel_frames"
    )
    encoder = onnx_encoder()
    together = encoder.embed(windows)
    alone = np.concatenate([encoder.embed([w]) for w in windows[:8]])
    assert np.min(np.sum(together[:8] * alone, axis=1)) > 0.9999


def test_uncovered_frames_take_the_nearest_window_label() -> None:
    # Regions too short to embed get no window; their frames take the nearest window's label,
    # a block of frames at a time. Checked against every frame against every window at once.
    rng = np.random.default_rng(3)
    spans = [(float(t), float(t) + 1.6) for t in range(0, 60, 2)]
    labels = rng.integers(0, 3, len(spans)).tolist()
    labels[:3] = [0, 1, 2]
    shorts = [(61.0 + 0.5 * k, 61.3 + 0.5 * k) for k in range(40)]  # 1200 uncovered frames
    regions = [(0.0, 61.0), *shorts]
    got = pipeline._vote(spans, labels, regions)
    times = (np.arange(len(got)) + 0.5) * pipeline.FRAME_S
    centres = np.array([(a + b) / 2 for a, b in spans])
    for start, end in shorts:
        frames = np.arange(int(start / pipeline.FRAME_S), int(np.ceil(end / pipeline.FRAME_S)))
        nearest = np.argmin(np.abs(times[frames, None] - centres[None, :]), axis=1)
        assert got[frames].tolist() == np.asarray(labels)[nearest].tolist()
    assert got[int(61.4 / pipeline.FRAME_S)] == -1  # between two short regions
    assert len(np.flatnonzero(got[6100:] >= 0)) > pipeline.NEAREST_BLOCK


def test_onnx_path_diarizes_without_torch() -> None:
    onnx_encoder()  # the export (torch) happens here, as an image build does
    # A fresh interpreter diarizes with the export alone (shared with the worker's check in
    # tests/test_diarization_server.py: tests/support/torch_free.py).
    outcome = torch_free_diarization()["encoder"]
    assert outcome["loaded"] == []
    assert outcome["der"] <= MAX_DER
