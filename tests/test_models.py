"""Model resolution, checksum pins and CTranslate2 → openai-whisper conversion (real weights)."""

from __future__ import annotations

import shutil
import struct
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import whisper
from faster_whisper import WhisperModel

from skyhigh.speech.ct2_converter import ConversionError, read_ct2_model
from skyhigh.speech.decoding import DecodingSettings
from skyhigh.speech.engines.openai_whisper import OpenAIWhisperTranscriber
from skyhigh.speech.weights import (
    BUNDLED_SHA256,
    ModelChecksumError,
    ModelNotFoundError,
    ResolvedModel,
    resolve_whisper_model,
    sha256_file,
    verify_sha256,
)

DATA = Path(__file__).parent / "data"


def test_converted_tiny_en_loads_in_openai_whisper(
    tiny_openai: ResolvedModel, tiny_whisper_model: Any
) -> None:
    assert tiny_openai.source == "bundled"
    assert tiny_openai.source_sha256 == BUNDLED_SHA256["tiny.en/model.bin"]
    dims = tiny_whisper_model.dims
    assert (dims.n_mels, dims.n_vocab, dims.n_audio_layer, dims.n_text_layer) == (80, 51864, 4, 4)
    assert (dims.n_audio_head, dims.n_text_head, dims.n_text_state) == (6, 6, 384)
    assert not tiny_whisper_model.is_multilingual


def test_greedy_tokens_match_faster_whisper(
    tiny_openai: ResolvedModel,
    tiny_whisper_model: Any,
    jfk: np.ndarray[Any, np.dtype[np.float32]],
) -> None:
    # Same greedy settings on both sides, timestamps included; faster-whisper in float32 so both
    # run the same (fp16-sourced) weights at the same precision.
    result = whisper.transcribe(
        tiny_whisper_model,
        jfk,
        temperature=0.0,
        condition_on_previous_text=False,
        language="en",
        fp16=False,
    )
    openai_tokens = [t for segment in result["segments"] for t in segment["tokens"]]

    assert tiny_openai.ct2_dir is not None
    model = WhisperModel(str(tiny_openai.ct2_dir), compute_type="float32", cpu_threads=2)
    segments, _ = model.transcribe(
        jfk, language="en", beam_size=1, temperature=0.0, condition_on_previous_text=False
    )
    faster_tokens = [t for segment in segments for t in segment.tokens]

    assert len(openai_tokens) > 20
    assert openai_tokens == faster_tokens


def test_second_resolve_reuses_the_converted_checkpoint(
    tiny_openai: ResolvedModel, model_cache: Path
) -> None:
    assert tiny_openai.checkpoint is not None
    mtime = tiny_openai.checkpoint.stat().st_mtime_ns
    started = time.perf_counter()
    again = resolve_whisper_model("tiny.en", engine="openai-whisper", cache_dir=model_cache)
    assert time.perf_counter() - started < 5
    assert again == tiny_openai
    assert again.checkpoint is not None and again.checkpoint.stat().st_mtime_ns == mtime


def test_damaged_cached_checkpoint_is_rebuilt(tmp_path: Path, tiny_openai: ResolvedModel) -> None:
    assert tiny_openai.checkpoint is not None
    cache = tmp_path / "cache"
    (cache / "openai-whisper").mkdir(parents=True)
    for suffix in (".pt", ".pt.sha256"):
        source = tiny_openai.checkpoint.with_suffix(suffix)
        shutil.copy(source, cache / "openai-whisper" / source.name)
    damaged = cache / "openai-whisper" / tiny_openai.checkpoint.name
    _flip_last_byte(damaged)

    rebuilt = resolve_whisper_model("tiny.en", engine="openai-whisper", cache_dir=cache)
    assert rebuilt.checkpoint == damaged
    assert verify_sha256(damaged, rebuilt.sha256) == rebuilt.sha256
    whisper.load_model(str(damaged), device="cpu")


def test_tampered_weights_raise_checksum_error(tmp_path: Path, tiny_openai: ResolvedModel) -> None:
    assert tiny_openai.ct2_dir is not None
    tampered = tmp_path / "model.bin"
    shutil.copy(tiny_openai.ct2_dir / "model.bin", tampered)
    _flip_last_byte(tampered)
    expected = BUNDLED_SHA256["tiny.en/model.bin"]

    with pytest.raises(ModelChecksumError) as caught:
        verify_sha256(tampered, expected)

    message = str(caught.value)
    assert str(tampered) in message and expected in message and caught.value.actual in message
    assert caught.value.actual != expected


def test_resolve_refuses_bundled_weights_with_wrong_pin(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(BUNDLED_SHA256, "tiny.en/model.bin", "0" * 64)
    with pytest.raises(ModelChecksumError, match="0{64}"):
        resolve_whisper_model("tiny.en", engine="faster-whisper", cache_dir=tmp_path)


@pytest.mark.slow
def test_resolve_base_assembles_once_and_matches_pin(model_cache: Path) -> None:
    resolved = resolve_whisper_model("base", engine="faster-whisper", cache_dir=model_cache)
    assert resolved.source == "bundled"
    assert resolved.sha256 == BUNDLED_SHA256["base/model.bin"]
    assert resolved.ct2_dir is not None
    model_bin = resolved.ct2_dir / "model.bin"
    assert (resolved.ct2_dir / "config.json").is_file()
    assert (resolved.ct2_dir / "tokenizer.json").is_file()
    mtime = model_bin.stat().st_mtime_ns

    again = resolve_whisper_model("base", engine="faster-whisper", cache_dir=model_cache)
    assert again == resolved
    assert model_bin.stat().st_mtime_ns == mtime  # verified, not rebuilt


@pytest.mark.slow
def test_base_converts_to_a_multilingual_checkpoint(
    model_cache: Path, jfk: np.ndarray[Any, np.dtype[np.float32]]
) -> None:
    resolved = resolve_whisper_model("base", engine="openai-whisper", cache_dir=model_cache)
    assert resolved.source_sha256 == BUNDLED_SHA256["base/model.bin"]
    assert resolved.checkpoint is not None
    model = whisper.load_model(str(resolved.checkpoint), device="cpu")
    assert model.is_multilingual and model.dims.n_vocab == 51865
    assert model.dims.n_text_layer == 6 and model.dims.n_text_state == 512

    mel = whisper.log_mel_spectrogram(whisper.pad_or_trim(jfk), model.dims.n_mels)
    _, probs = model.detect_language(mel)
    assert max(probs, key=probs.get) == "en"


def test_ct2_directory_and_pt_paths_resolve(
    tiny_openai: ResolvedModel, model_cache: Path, tmp_path: Path
) -> None:
    assert tiny_openai.ct2_dir is not None and tiny_openai.checkpoint is not None
    from_dir = resolve_whisper_model(
        str(tiny_openai.ct2_dir), engine="faster-whisper", cache_dir=model_cache
    )
    assert from_dir.source == "path" and from_dir.ct2_dir == tiny_openai.ct2_dir
    assert from_dir.sha256 == BUNDLED_SHA256["tiny.en/model.bin"]

    from_pt = resolve_whisper_model(
        str(tiny_openai.checkpoint), engine="openai-whisper", cache_dir=model_cache
    )
    assert from_pt.source == "path" and from_pt.checkpoint == tiny_openai.checkpoint
    assert from_pt.sha256 == tiny_openai.sha256

    with pytest.raises(ModelNotFoundError, match="CTranslate2 model directory"):
        resolve_whisper_model(
            str(tiny_openai.checkpoint), engine="faster-whisper", cache_dir=model_cache
        )
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_whisper_model(
            str(tmp_path / "nope.pt"), engine="openai-whisper", cache_dir=tmp_path
        )


def test_other_official_names_use_the_engine_download(
    tmp_path: Path, tiny_openai: ResolvedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Resolving fetches nothing: openai-whisper downloads inside whisper.load_model.
    resolved = resolve_whisper_model("small", engine="openai-whisper", cache_dir=tmp_path)
    assert resolved.source == "download"
    assert resolved.download_root == tmp_path / "whisper" / "small"
    assert resolved.checkpoint is None and resolved.sha256 is None
    with pytest.raises(ModelNotFoundError, match="unknown whisper model"):
        resolve_whisper_model("enormous", engine="openai-whisper", cache_dir=tmp_path)

    # No model hub here: a stand-in load_model "downloads" tiny.en's checkpoint the way whisper
    # does (into download_root, under the release's file name) and loads it.
    assert tiny_openai.checkpoint is not None
    load_model = whisper.load_model
    calls: list[tuple[str, str]] = []

    def fake_load_model(name: str, device: str, download_root: str) -> Any:
        calls.append((name, download_root))
        target = Path(download_root) / f"{name}.pt"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_openai.checkpoint, target)
        return load_model(str(target), device=device)

    monkeypatch.setattr(whisper, "load_model", fake_load_model)
    transcriber = OpenAIWhisperTranscriber(resolved, decoding=DecodingSettings())
    assert calls == [("small", str(tmp_path / "whisper" / "small"))]
    assert transcriber.sha256 == sha256_file(tmp_path / "whisper" / "small" / "small.pt")


def test_read_ct2_model_dequantizes_int8_per_row(tmp_path: Path) -> None:
    weight = np.array([[127, -64], [10, 0]], dtype=np.int8)
    scale = np.array([127 / 0.5, 127 / 2.0], dtype=np.float32)
    bias = np.array([1.5, -2.0], dtype=np.float16)
    model_bin = tmp_path / "model.bin"
    model_bin.write_bytes(
        _ct2_file([("x/weight", 1, weight), ("x/weight_scale", 0, scale), ("x/bias", 4, bias)])
    )

    variables = read_ct2_model(model_bin)

    assert set(variables) == {"x/weight", "x/bias", "y"}
    expected = torch.tensor([[0.5, -64 * 0.5 / 127], [10 * 2.0 / 127, 0.0]])
    assert torch.allclose(variables["x/weight"], expected)
    assert variables["x/bias"].dtype == torch.float32
    assert torch.equal(variables["y"], variables["x/bias"])  # alias


def test_read_ct2_model_rejects_other_specs(tmp_path: Path) -> None:
    model_bin = tmp_path / "model.bin"
    model_bin.write_bytes(_ct2_file([], spec="TransformerSpec"))
    with pytest.raises(ConversionError, match="not a Whisper model"):
        read_ct2_model(model_bin)


def _flip_last_byte(path: Path) -> None:
    with path.open("r+b") as f:
        f.seek(-1, 2)
        last = f.read(1)
        f.seek(-1, 2)
        f.write(bytes([last[0] ^ 0xFF]))


def _ct2_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<H", len(raw) + 1) + raw + b"\0"


def _ct2_file(
    variables: list[tuple[str, int, np.ndarray[Any, Any]]], spec: str = "WhisperSpec"
) -> bytes:
    """A model.bin in CTranslate2's layout, with alias y → x/bias when x/bias is present."""
    out = struct.pack("<I", 6) + _ct2_string(spec) + struct.pack("<II", 3, len(variables))
    for name, type_id, value in variables:
        out += _ct2_string(name) + struct.pack("<B", value.ndim)
        out += struct.pack(f"<{value.ndim}I", *value.shape)
        out += struct.pack("<BI", type_id, value.nbytes) + value.tobytes()
    aliases = [("y", "x/bias")] if any(name == "x/bias" for name, _, _ in variables) else []
    out += struct.pack("<I", len(aliases))
    for alias, target in aliases:
        out += _ct2_string(alias) + _ct2_string(target)
    return out
