"""The int8 ONNX embedder against the torch one it replaces: the documented export
command, agreement over the whole demo knowledge base, the same top-3 for test questions, and a
damaged or missing export. Real MiniLM weights on both sides."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import sys
from pathlib import Path

import lancedb
import numpy as np
import pytest

from skyhigh.cli import export_onnx
from skyhigh.config import KnowledgeSettings
from skyhigh.knowledge.embedder import load_embedder
from skyhigh.knowledge.onnx_embedder import OnnxEmbedder
from skyhigh.knowledge.onnx_model import (
    OnnxModel,
    OnnxModelError,
    find_onnx_model,
    weights_sha256,
)
from skyhigh.knowledge.torch_embedder import TorchEmbedder
from tests.support.settings import ROOT

MODEL = "all-MiniLM-L6-v2"
QUESTIONS = (
    "How many bags can I check in for free?",
    "Can I bring my cat in the cabin?",
    "My flight was delayed by four hours, do I get compensation?",
    "What is the fee for an extra suitcase?",
    "Is there wifi on board?",
    "Can I get a refund if I cancel my ticket?",
    "Do you serve vegetarian meals?",
    "How early should I be at the airport?",
    "My suitcase arrived damaged",
    "Can I fly while pregnant?",
    "How do I earn miles?",
    "I need a wheelchair at the airport",
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> OnnxModel:
    """A fresh export made by the documented command, into a cache of its own.

    The command's own entry point (`python -m skyhigh.cli.export_onnx` runs `main`), called in
    this process: the torch reference below then reuses the transformers import and model load
    it paid for (about 8 s of a 20 s export in a process of its own)."""
    cache = tmp_path_factory.mktemp("onnx-cache")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        export_onnx.main(["--cache-dir", str(cache)])
    model = find_onnx_model(weights_sha256(MODEL), cache_dir=cache)
    assert model is not None and str(model.directory) in printed.getvalue()
    return model


@pytest.fixture(scope="module")
def torch_embedder() -> TorchEmbedder:
    return TorchEmbedder(MODEL)


@pytest.fixture(scope="module")
def onnx_embedder(exported: OnnxModel) -> OnnxEmbedder:
    return OnnxEmbedder(MODEL, exported)


@pytest.fixture(scope="module")
def knowledge() -> tuple[list[str], list[str], np.ndarray]:
    """The shipped table: ids, the texts its vectors were made from, and those (torch) vectors."""
    table = lancedb.connect(ROOT / "lancedb_data").open_table("knowledge").to_arrow()
    texts = [
        f"{title}\n{text}"
        for title, text in zip(table["title"].to_pylist(), table["text"].to_pylist(), strict=True)
    ]
    vectors = np.asarray(table["vector"].to_pylist(), dtype=np.float32)
    return table["id"].to_pylist(), texts, vectors


@pytest.mark.slow  # the documented export runs first (torch and ONNX)
def test_the_export_is_int8_and_checked(exported: OnnxModel) -> None:
    manifest = json.loads((exported.directory / "manifest.json").read_text())
    assert manifest["min_cosine_to_torch"] >= 0.99
    assert manifest["dimension"] == 384 and manifest["max_seq_length"] == 256
    # int8 weights: about a quarter of the 90 MB float model (a few projections stay float).
    assert exported.model_path.stat().st_size < 35e6


@pytest.mark.slow
def test_vectors_agree_with_torch_over_the_whole_demo_knowledge_base(
    torch_embedder: TorchEmbedder,
    onnx_embedder: OnnxEmbedder,
    knowledge: tuple[list[str], list[str], np.ndarray],
) -> None:
    _, texts, stored = knowledge
    reference = torch_embedder.embed(texts)
    # The shipped vectors are torch's: the reference is the one the table was built with.
    assert np.min(np.sum(reference * stored, axis=1)) > 0.9999
    vectors = onnx_embedder.embed(texts)
    cosine = np.sum(reference * vectors, axis=1)  # both are normalised
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert cosine.min() >= 0.99, (texts[int(np.argmin(cosine))], float(cosine.min()))


@pytest.mark.slow
def test_questions_find_the_same_top_3(
    torch_embedder: TorchEmbedder,
    onnx_embedder: OnnxEmbedder,
    knowledge: tuple[list[str], list[str], np.ndarray],
) -> None:
    ids, _, stored = knowledge
    reference = stored @ torch_embedder.embed(list(QUESTIONS)).T
    found = stored @ onnx_embedder.embed(list(QUESTIONS)).T
    for column, question in enumerate(QUESTIONS):
        want = np.argsort(-reference[:, column])
        got = np.argsort(-found[:, column])
        top, third, fourth = list(want[:3]), reference[want[2], column], reference[want[3], column]
        if third - fourth < 0.01:
            # The 3rd and 4th are a near-tie for torch itself (within 0.01): int8 noise may swap
            # them, but nothing else may enter.
            assert list(got[:2]) == top[:2] and got[2] in want[2:4], question
        else:
            assert set(got[:3]) == set(top), (question, [ids[i] for i in got[:3]])


@pytest.mark.slow
def test_batches_and_single_texts_give_the_same_vectors(onnx_embedder: OnnxEmbedder) -> None:
    texts = ["short", "a somewhat longer text about checked baggage " * 8, "ZQXB45249"]
    together = onnx_embedder.embed(texts)
    alone = np.concatenate([onnx_embedder.embed([text]) for text in texts])
    assert np.array_equal(together, alone)  # a text's vector never depends on its batch
    assert onnx_embedder.embed([]).shape == (0, 384)


@pytest.mark.slow
def test_a_damaged_export_is_not_loaded(exported: OnnxModel, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(exported.directory.parent, cache / "embeddings-onnx")
    assert find_onnx_model(exported.source_sha256, cache_dir=cache) is not None
    copy = cache / "embeddings-onnx" / exported.directory.name / "model.onnx"
    with copy.open("r+b") as f:
        f.seek(1000)
        f.write(b"\0" * 16)
    assert find_onnx_model(exported.source_sha256, cache_dir=cache) is None


def test_no_export_and_no_torch_says_what_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What a torch-free image without the baked export would meet at start-up.
    monkeypatch.setitem(sys.modules, "torch", None)
    settings = KnowledgeSettings(embedding_backend="onnx")
    with pytest.raises(OnnxModelError, match=r"skyhigh\.cli\.export_onnx"):
        load_embedder(settings, cache_dir=tmp_path)


def test_onnx_needs_a_model_it_can_find_offline(tmp_path: Path) -> None:
    settings = KnowledgeSettings(embedding_backend="onnx", embedding_model="org/some-hub-model")
    with pytest.raises(OnnxModelError, match="local sentence-transformers directory"):
        load_embedder(settings, cache_dir=tmp_path)
