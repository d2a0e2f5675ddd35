"""Hybrid ranking that respects exact matches. Real LanceDB, real MiniLM.

The property: a document holding a unique code (booking reference, flight number, product code)
comes first in a `hybrid` search for that code, among distractor documents of random short text,
for every seed. Plain RRF failed this (the vector side ranked nonsense first, the document fell
out of the vector list, and a 1/61 tie went the wrong way).
"""

from __future__ import annotations

import random
import shutil
import string
import uuid
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pytest
from fastapi.testclient import TestClient

from skyhigh.config import Settings
from skyhigh.knowledge.embedder import Embedder, load_embedder
from skyhigh.knowledge.fusion import Candidate, fuse, is_exact, tokens
from skyhigh.knowledge.search import KnowledgeBase
from skyhigh.knowledge.writer import KnowledgeWriter, WriteOp, WriterConfig
from tests.support.client import wait_terminal
from tests.support.settings import ROOT, model_cache_dir

SEEDS = range(40)
# What an API fuzz run writes: short strings of letters, digits, punctuation and a few others.
FUZZ_ALPHABET = string.ascii_letters + string.digits + "!?#%&*+-./:;<=>@_~éßжλ"
TEMPLATES = (
    "Catering memo: from March the economy snack box on short routes switches to a vegan wrap "
    "and a fruit cup. Suppliers must relabel boxes with product code {code} before delivery.",
    "Passengers on the rebooked morning service keep their seats and meal choices. The new "
    "booking reference {code} replaces the old one, and boarding passes sent before the change "
    "remain valid at security.",
    "Ground handling notice: the spare wheelchair lift at the north apron is out of service "
    "until Friday; request unit {code} from the east hangar and log its return with the duty "
    "manager.",
    "Flight {code} to Lisbon now leaves from terminal 2; check-in closes 45 minutes before "
    "departure and the lounge stays open for Gold members.",
)


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    # The service's default embedding backend and model.
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    return load_embedder(settings.knowledge, cache_dir=model_cache_dir())


def nonsense(rng: random.Random) -> str:
    words = rng.randint(1, 4)
    return " ".join(
        "".join(rng.choice(FUZZ_ALPHABET) for _ in range(rng.randint(1, 8))) for _ in range(words)
    )


def random_code(rng: random.Random) -> str:
    letters, digits = string.ascii_uppercase, string.digits
    kind = rng.randrange(4)
    if kind == 0:  # ZQXB45249
        return "".join(rng.choices(letters, k=4)) + "".join(rng.choices(digits, k=5))
    if kind == 1:  # flight number
        return rng.choice(["SH", "LX", "BA", "U2"]) + str(rng.randint(10, 9999))
    if kind == 2:  # booking reference
        return "".join(rng.choices(letters + digits, k=6))
    return "".join(rng.choices(letters, k=2)) + "-" + "".join(rng.choices(digits, k=4))


def rows(embedder: Embedder, documents: list[tuple[str, str, str]]) -> list[dict[str, Any]]:
    vectors = embedder.embed([f"{title}\n{text}" for _, title, text in documents])
    return [
        {
            "id": f"{doc_id}#0",
            "document_id": doc_id,
            "chunk": 0,
            "title": title,
            "text": text,
            "content_sha256": "0" * 64,
            "vector": vector.tolist(),
        }
        for (doc_id, title, text), vector in zip(documents, vectors, strict=True)
    ]


def fresh_knowledge_base(tmp: Path) -> tuple[KnowledgeBase, KnowledgeWriter]:
    """A private copy of the shipped knowledge base (209 entries), written as the service does."""
    shutil.copytree(ROOT / "lancedb_data", tmp / "kb")
    kb = KnowledgeBase(str(tmp / "kb"), default_table="knowledge")
    # Not started: submit() applies each write inline, through the service's write path.
    return kb, KnowledgeWriter(kb, WriterConfig(dimension=384))


def test_a_unique_code_ranks_first_among_random_distractors(
    embedder: Embedder, tmp_path: Path
) -> None:
    failures = []
    for seed in SEEDS:
        rng = random.Random(seed)
        kb, writer = fresh_knowledge_base(tmp_path / str(seed))
        # A fuzz run's short nonsense documents first, then the document with the code.
        distractors = [(f"fuzz-{i}", nonsense(rng)[:12], nonsense(rng)) for i in range(12)]
        writer.submit(WriteOp("knowledge", "documents", rows(embedder, distractors))).result()
        code = random_code(rng)
        target = ("target", "Notice", rng.choice(TEMPLATES).format(code=code))
        writer.submit(WriteOp("knowledge", "documents", rows(embedder, [target]))).result()
        for query in (code, code.lower(), f"{code}?"):
            vector = embedder.embed([query])[0]
            matches = kb.search(vector, text=query, k=5, mode="hybrid")
            if not matches or matches[0].id != "target#0":
                top = [(m.id, m.score) for m in matches[:3]]
                failures.append(f"seed {seed}, query {query!r}: {top}")
    assert not failures, f"{len(failures)} of {len(SEEDS) * 3} queries lost the code: {failures}"


def test_a_fuzzed_table_over_the_api_keeps_the_code_first(client: TestClient) -> None:
    """The reported steps: nonsense documents written by events, then the code, then hybrid."""
    table = f"fuzzed_{uuid.uuid4().hex[:8]}"
    rng = random.Random(13)

    def run(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
        event_id = f"{event_type}-{uuid.uuid4().hex[:10]}"
        body = {"event_id": event_id, "event_type": event_type, "event_data": data}
        response = client.post("/events/", json=body)
        assert response.status_code == 202, response.text
        record = wait_terminal(client.get, event_id)
        assert record["status"] == "completed", record
        return record

    for i in range(12):
        run(
            "document",
            {
                "document_id": f"fuzz-{i}",
                "title": nonsense(rng),
                "text": nonsense(rng),
                "table": table,
            },
        )
    for round_ in range(3):
        code = random_code(rng)
        text = TEMPLATES[round_].format(code=code)
        run(
            "document",
            {"document_id": f"code-{round_}", "title": "Notice", "text": text, "table": table},
        )
        record = run("query", {"text": code, "k": 3, "mode": "hybrid", "table": table})
        matches = record["result"]["matches"]
        assert matches[0]["metadata"]["document_id"] == f"code-{round_}", (code, matches)


def test_vector_and_fulltext_results_are_lancedb_s_own(embedder: Embedder, tmp_path: Path) -> None:
    """The new fusion touches hybrid only: the other modes return LanceDB's ranking as before."""
    kb, _ = fresh_knowledge_base(tmp_path)
    table = lancedb.connect(tmp_path / "kb").open_table("knowledge")
    for question in ("How many bags can I check in for free?", "cat in the cabin", "refund"):
        vector = embedder.embed([question])[0]
        own = table.search(vector).distance_type("cosine").nprobes(20).refine_factor(10)
        expected = [(r["id"], round(1 - r["_distance"], 6)) for r in own.limit(5).to_list()]
        found = kb.search(vector, text=question, k=5, mode="vector")
        assert [(m.id, m.score) for m in found] == expected
        text_rows = table.search(question, query_type="fts").limit(5).to_list()
        expected = [(r["id"], round(r["_score"], 6)) for r in text_rows]
        found = kb.search(vector, text=question, k=5, mode="fulltext")
        assert [(m.id, m.score) for m in found] == expected


def test_min_score_in_hybrid_mode_is_a_cosine_floor_that_spares_exact_matches(
    embedder: Embedder, tmp_path: Path
) -> None:
    kb, writer = fresh_knowledge_base(tmp_path)
    memo = "Suppliers must relabel snack boxes with product code QZ-8841 before delivery."
    writer.submit(
        WriteOp("knowledge", "documents", rows(embedder, [("memo", "Memo", memo)]))
    ).result()
    question = "How many bags can I check in for free?"
    vector = embedder.embed([question])[0]
    similarity = {m.id: m.score for m in kb.search(vector, text=question, k=50, mode="vector")}
    everything = kb.search(vector, text=question, k=10, mode="hybrid")
    strict = kb.search(vector, text=question, k=10, mode="hybrid", min_score=0.6)
    assert strict and strict[0].id == "baggage-checked-allowance#0"
    assert all(similarity[m.id] >= 0.6 for m in strict)
    # The same order as without the floor, minus what fell below it.
    assert [m.id for m in strict] == [m.id for m in everything if similarity[m.id] >= 0.6]
    # A code has no meaning to the vector side, so its exact match must survive any floor.
    code_vector = embedder.embed(["QZ-8841"])[0]
    coded = kb.search(code_vector, text="QZ-8841", k=5, mode="hybrid", min_score=0.6)
    assert [m.id for m in coded] == ["memo#0"]


# --------------------------------------------------------------------------- fusion, unit level


def candidate(
    id_: str, similarity: float, bm25: float | None = None, *, exact: bool = False
) -> Candidate:
    return Candidate(id=id_, similarity=similarity, bm25=bm25, exact=exact)


def test_an_exact_match_outranks_any_row_only_one_search_found() -> None:
    rows_ = [
        candidate("vector-first", 0.9),
        candidate("text-first", 0.1, 9.0),
        *(candidate(f"both-{i}", 0.8 - i / 100, 5.0 - i / 10) for i in range(10)),
        # Last on both sides among the candidates, but it holds every query token.
        candidate("exact", 0.05, 0.5, exact=True),
    ]
    order = [ranked.id for ranked in fuse(rows_)]
    assert order.index("exact") < order.index("vector-first")
    assert order.index("exact") < order.index("text-first")


def test_ties_are_broken_the_same_way_whatever_the_input_order() -> None:
    rows_ = [
        candidate("a", 0.5, 2.0),
        candidate("b", 0.5, 2.0),  # identical to a: shares its ranks, so the id decides
        candidate("c", 0.7),
        candidate("d", 0.3, 3.0),
        candidate("e", 0.7),  # identical to c
    ]
    expected = [ranked.id for ranked in fuse(rows_)]
    for seed in range(20):
        shuffled = rows_[:]
        random.Random(seed).shuffle(shuffled)
        assert [ranked.id for ranked in fuse(shuffled)] == expected
    assert expected.index("a") + 1 == expected.index("b")
    assert expected.index("c") + 1 == expected.index("e")
    scores = {ranked.id: ranked.score for ranked in fuse(rows_)}
    assert scores["a"] == scores["b"] and scores["c"] == scores["e"]
    assert np.isclose(scores["a"], 1 / (60 + 3) + 1 / (60 + 2))  # cosine rank 3, BM25 rank 2


def test_tokens_fold_case_accents_and_punctuation_like_the_text_index() -> None:
    assert tokens("Booking QZ-8841, Café!") == {"booking", "qz", "8841", "cafe"}
    assert is_exact(tokens("qz-8841"), "Memo", "relabel with product code QZ-8841.")
    assert not is_exact(tokens("QZ-8842"), "Memo", "relabel with product code QZ-8841.")
    assert not is_exact(tokens("?!"), "Memo", "anything")  # a query without tokens
    assert is_exact(tokens("lisbon lounge"), "Lisbon", "The lounge opens at six.")  # title too
