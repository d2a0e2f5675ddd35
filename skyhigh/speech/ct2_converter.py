"""CTranslate2 Whisper weights → an openai-whisper checkpoint, with nothing but torch.

The bundled weights are CTranslate2 model.bin files (what faster-whisper loads). openai-whisper
needs a PyTorch checkpoint ({"dims", "model_state_dict"}); this module reads CT2's binary layout
itself (no ctranslate2 import), dequantizes int8/int16 weights and maps every variable to its
openai-whisper name. Greedy decoding on the result gives the same tokens as faster-whisper on the
source (tests/test_models.py).

    convert_ct2_to_whisper(Path("ct2/tiny.en"), Path("tiny.en.pt"))
    whisper.load_model("tiny.en.pt")

Only torch and the standard library are imported (plus skyhigh.durable_files): the Docker image
converts the bundled weights in an early layer that holds just these modules.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import Final

import torch

from skyhigh.durable_files import atomic_writer


class ConversionError(ValueError):
    """A CTranslate2 model.bin could not be read or mapped to openai-whisper."""


def convert_ct2_to_whisper(ct2_dir: Path, out_path: Path) -> Path:
    """Write an openai-whisper checkpoint ({"dims", "model_state_dict"}) from CT2 weights."""
    variables = read_ct2_model(ct2_dir / "model.bin")
    dims = _infer_dims(variables)
    state_dict = _map_state_dict(variables, dims)
    # 0644: the model cache is shared with other service users.
    with atomic_writer(out_path, mode=0o644) as out:
        torch.save({"dims": dims, "model_state_dict": state_dict}, out)
    return out_path


# CTranslate2's DataType enum order (include/ctranslate2/types.h; specs/model_spec.py)
_CT2_DTYPES: Final = (
    torch.float32,
    torch.int8,
    torch.int16,
    torch.int32,
    torch.float16,
    torch.bfloat16,
)
_SUPPORTED_BINARY_VERSION: Final = 6


def read_ct2_model(path: Path) -> dict[str, torch.Tensor]:
    """Read a CTranslate2 model.bin into float32 tensors (int8/int16 dequantized), by name.

    Layout (ctranslate2/specs/model_spec.py `_serialize`, little-endian): u32 version, string spec
    name, u32 revision, u32 count, then per variable: string name, u8 rank, u32 dims, u8 dtype,
    u32 byte count, raw data; then u32 alias count and (alias, target) string pairs. Strings are
    u16 length (including a trailing NUL) + bytes.
    """
    data = bytearray(path.stat().st_size)
    with path.open("rb") as f:
        f.readinto(data)  # one read; tensors below are views into this buffer until converted
    reader = _Reader(data)
    version = reader.u32()
    if version != _SUPPORTED_BINARY_VERSION:
        raise ConversionError(f"{path}: CTranslate2 binary version {version} is not supported")
    spec = reader.string()
    reader.u32()  # spec revision: the Whisper layout has not changed across revisions 1-3
    if spec != "WhisperSpec":
        raise ConversionError(f"{path} holds a {spec}, not a Whisper model")
    raw = dict(reader.variable() for _ in range(reader.u32()))
    for _ in range(reader.u32()):
        alias, target = reader.string(), reader.string()
        raw[alias] = raw[target]
    return _dequantize(raw)


class _Reader:
    def __init__(self, data: bytearray) -> None:
        self.data = data
        self.pos = 0

    def _unpack(self, fmt: str) -> tuple[int, ...]:
        values = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return values

    def u32(self) -> int:
        return self._unpack("<I")[0]

    def string(self) -> str:
        (length,) = self._unpack("<H")
        raw = bytes(self.data[self.pos : self.pos + length - 1])
        self.pos += length
        return raw.decode("utf-8")

    def variable(self) -> tuple[str, torch.Tensor]:
        name = self.string()
        (rank,) = self._unpack("<B")
        shape = self._unpack(f"<{rank}I")
        (type_id,) = self._unpack("<B")
        nbytes = self.u32()
        dtype = _CT2_DTYPES[type_id]
        count = nbytes // dtype.itemsize
        tensor = torch.frombuffer(self.data, dtype=dtype, count=count, offset=self.pos)
        self.pos += nbytes
        return name, tensor.reshape(shape)


def _dequantize(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Float32 copies of every variable; quantized weights divided by their `<name>_scale`.

    The copies detach the tensors from the file buffer, so torch.save writes only each tensor's
    own bytes rather than the whole shared storage.
    """
    out: dict[str, torch.Tensor] = {}
    for name, value in raw.items():
        if name.endswith("_scale") and name[: -len("_scale")] in raw:
            continue
        scale = raw.get(f"{name}_scale")
        if scale is None or value.is_floating_point():
            out[name] = value.to(torch.float32, copy=True)
            continue
        # int8: one scale per output row (quantized = round(w * 127 / amax(row)));
        # int16: one scale for the whole tensor.
        scale = scale.to(torch.float32).reshape(-1, *([1] * (value.dim() - 1)))
        out[name] = value.to(torch.float32) / scale
    return out


def _infer_dims(v: dict[str, torch.Tensor]) -> dict[str, int]:
    conv1 = v["encoder/conv1/weight"]
    audio_pos = v["encoder/position_encodings/encodings"]
    text_pos = v["decoder/position_encodings/encodings"]
    n_audio_state, n_text_state = int(conv1.shape[0]), int(text_pos.shape[1])
    return {
        "n_mels": int(conv1.shape[1]),
        "n_audio_ctx": int(audio_pos.shape[0]),
        "n_audio_state": n_audio_state,
        "n_audio_head": _num_heads(v, "encoder", n_audio_state),
        "n_audio_layer": _count_layers(v, "encoder"),
        "n_vocab": int(v["decoder/embeddings/weight"].shape[0]),
        "n_text_ctx": int(text_pos.shape[0]),
        "n_text_state": n_text_state,
        "n_text_head": _num_heads(v, "decoder", n_text_state),
        "n_text_layer": _count_layers(v, "decoder"),
    }


def _num_heads(v: dict[str, torch.Tensor], side: str, n_state: int) -> int:
    heads = v.get(f"{side}/num_heads")
    # Every Whisper size uses 64-dimensional heads, the fallback for specs without the scalar.
    return int(heads.item()) if heads is not None else n_state // 64


def _count_layers(v: dict[str, torch.Tensor], side: str) -> int:
    pattern = re.compile(rf"{side}/layer_(\d+)/")
    return 1 + max(int(m.group(1)) for name in v if (m := pattern.match(name)))


def _map_state_dict(v: dict[str, torch.Tensor], dims: dict[str, int]) -> dict[str, torch.Tensor]:
    sd: dict[str, torch.Tensor] = {}
    _linear(sd, v, "encoder.conv1", "encoder/conv1")
    _linear(sd, v, "encoder.conv2", "encoder/conv2")
    sd["encoder.positional_embedding"] = v["encoder/position_encodings/encodings"]
    for i in range(dims["n_audio_layer"]):
        _block(sd, v, f"encoder.blocks.{i}", f"encoder/layer_{i}", cross=False)
    _norm(sd, v, "encoder.ln_post", "encoder/layer_norm")

    embedding = v["decoder/embeddings/weight"]
    projection = v.get("decoder/projection/weight")
    # openai-whisper ties the output projection to the token embedding; CT2 stores it as an alias.
    if projection is not None and not torch.equal(projection, embedding):
        raise ConversionError("decoder projection differs from the token embedding (untied)")
    sd["decoder.token_embedding.weight"] = embedding
    sd["decoder.positional_embedding"] = v["decoder/position_encodings/encodings"]
    for i in range(dims["n_text_layer"]):
        _block(sd, v, f"decoder.blocks.{i}", f"decoder/layer_{i}", cross=True)
    _norm(sd, v, "decoder.ln", "decoder/layer_norm")
    return sd


def _block(
    sd: dict[str, torch.Tensor], v: dict[str, torch.Tensor], dst: str, src: str, *, cross: bool
) -> None:
    attn = f"{src}/self_attention"
    q, k, v_ = _split(v, f"{attn}/linear_0", 3)
    _attention(sd, f"{dst}.attn", q, k, v_, _pair(v, f"{attn}/linear_1"))
    _norm(sd, v, f"{dst}.attn_ln", f"{attn}/layer_norm")
    if cross:
        cross_src = f"{src}/attention"
        k, v_ = _split(v, f"{cross_src}/linear_1", 2)
        query = _pair(v, f"{cross_src}/linear_0")
        _attention(sd, f"{dst}.cross_attn", query, k, v_, _pair(v, f"{cross_src}/linear_2"))
        _norm(sd, v, f"{dst}.cross_attn_ln", f"{cross_src}/layer_norm")
    _linear(sd, v, f"{dst}.mlp.0", f"{src}/ffn/linear_0")
    _linear(sd, v, f"{dst}.mlp.2", f"{src}/ffn/linear_1")
    _norm(sd, v, f"{dst}.mlp_ln", f"{src}/ffn/layer_norm")


_Pair = tuple[torch.Tensor, torch.Tensor]


def _pair(v: dict[str, torch.Tensor], src: str) -> _Pair:
    return v[f"{src}/weight"], v[f"{src}/bias"]


def _split(v: dict[str, torch.Tensor], src: str, parts: int) -> list[_Pair]:
    weight, bias = _pair(v, src)
    return list(zip(weight.chunk(parts), bias.chunk(parts), strict=True))


def _attention(
    sd: dict[str, torch.Tensor], dst: str, q: _Pair, k: _Pair, v: _Pair, out: _Pair
) -> None:
    # whisper's key projection has no bias. Dropping CT2's (zero-filled) key bias is exact anyway:
    # q·(k + b) shifts every score of a query by the same q·b, and softmax ignores such shifts.
    sd[f"{dst}.key.weight"] = k[0].clone()
    for name, (weight, bias) in (("query", q), ("value", v), ("out", out)):
        # clone: chunk() returns views and torch.save would write the whole fused storage
        sd[f"{dst}.{name}.weight"], sd[f"{dst}.{name}.bias"] = weight.clone(), bias.clone()


def _linear(sd: dict[str, torch.Tensor], v: dict[str, torch.Tensor], dst: str, src: str) -> None:
    sd[f"{dst}.weight"], sd[f"{dst}.bias"] = _pair(v, src)


def _norm(sd: dict[str, torch.Tensor], v: dict[str, torch.Tensor], dst: str, src: str) -> None:
    sd[f"{dst}.weight"], sd[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]
