"""The knowledge base through the API: documents, replace/delete, filters, search modes,
automatic vector index, concurrent writes, searchable transcripts. Real LanceDB, real MiniLM."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lancedb
import pytest
from fastapi.testclient import TestClient

from main import create_app
from skyhigh.cli.ingest import ingest
from skyhigh.cli.seed import DEFAULT_SOURCE
from tests.support.client import jfk_base64, run, search
from tests.support.settings import AUTH, ROOT, make_settings

MEMO = (
    "Catering memo: from March the economy snack box on short routes switches to a vegan "
    "wrap and a fruit cup. Suppliers must relabel boxes with product code QZ-8841 before "
    "delivery."
)


@pytest.fixture(scope="module")
def kb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    # A test-sized index threshold: the shipped table has 209 rows, so ~100 more cross it.
    settings = make_settings(
        tmp_path_factory.mktemp("kb"),
        vector_index_min_rows=300,
        optimize_after_rows=40,
        chunk_size=300,
        chunk_overlap=60,
    )
    with TestClient(create_app(settings), headers=AUTH) as client:
        yield client


def test_document_is_chunked_embedded_and_found(kb: TestClient) -> None:
    text = " ".join(
        f"Section {i}: the SkyHigh lounge in Lisbon offers hot showers and quiet rooms for "
        f"Gold members on long layovers, item {i}."
        for i in range(12)
    )
    record = run(
        kb,
        "document",
        {
            "document_id": "lisbon-lounge",
            "title": "Lisbon lounge",
            "text": text,
            "metadata": {"category": "lounges", "source": "ops-wiki"},
        },
    )
    assert record["status"] == "completed", record
    result = record["result"]
    assert result["document_id"] == "lisbon-lounge" and result["table"] == "knowledge"
    assert result["chunks"] > 3  # 300-character chunks
    matches = search(kb, "Is there a shower in the Lisbon lounge?", k=3)
    assert matches[0]["metadata"]["document_id"] == "lisbon-lounge"
    assert matches[0]["metadata"]["source"] == "ops-wiki"  # new metadata became a column
    only = search(kb, "lounge showers", k=10, filter={"source": "ops-wiki"})
    assert only and {m["metadata"]["document_id"] for m in only} == {"lisbon-lounge"}


def test_resend_replaces_and_delete_removes(kb: TestClient) -> None:
    first = run(
        kb,
        "document",
        {
            "document_id": "wifi-policy",
            "title": "Wi-Fi",
            "text": "Onboard Wi-Fi costs 8 EUR per flight. " * 30,
        },
    )
    assert first["result"]["chunks"] > 1
    second = run(
        kb,
        "document",
        {
            "document_id": "wifi-policy",
            "title": "Wi-Fi",
            "text": "Onboard Wi-Fi is now free for every passenger.",
        },
    )
    assert second["result"] == {
        **second["result"],
        "chunks": 1,
        "replaced_chunks": first["result"]["chunks"],
    }
    ours = [
        m
        for m in search(kb, "How much is wifi on board?", k=20)
        if m["metadata"]["document_id"] == "wifi-policy"
    ]
    assert [m["text"] for m in ours] == ["Onboard Wi-Fi is now free for every passenger."]

    deleted = run(kb, "document_delete", {"document_id": "wifi-policy"})
    assert deleted["result"]["deleted_chunks"] == 1
    assert all(
        m["metadata"]["document_id"] != "wifi-policy"
        for m in search(kb, "How much is wifi on board?", k=20)
    )
    missing_table = run(kb, "document_delete", {"document_id": "x", "table": "nope"})
    assert missing_table["error"]["code"] == "table_not_found"


def test_generated_document_id_and_metadata_validation(kb: TestClient) -> None:
    record = run(kb, "document", {"title": "Note", "text": "A note without an id."})
    assert record["result"]["document_id"].startswith("doc-")
    bad = kb.post(
        "/events/",
        json={
            "event_id": "bad-meta",
            "event_type": "document",
            "event_data": {"title": "t", "text": "x", "metadata": {"nested": {"a": 1}}},
        },
    )
    assert bad.status_code == 422
    reserved = kb.post(
        "/events/",
        json={
            "event_id": "bad-meta2",
            "event_type": "document",
            "event_data": {"title": "t", "text": "x", "metadata": {"vector": "x"}},
        },
    )
    assert reserved.status_code == 422 and "must be an identifier" in reserved.text
    clash = run(kb, "document", {"title": "t", "text": "x", "metadata": {"category": 5}})
    assert clash["status"] == "failed" and clash["error"]["code"] == "invalid_metadata"


def test_hybrid_finds_an_exact_code_that_vector_search_misses(kb: TestClient) -> None:
    run(kb, "document", {"document_id": "catering-memo", "title": "Catering memo", "text": MEMO})
    vector = search(kb, "QZ-8841", k=3, mode="vector")
    assert "catering-memo" not in [m["metadata"]["document_id"] for m in vector]
    for mode in ("hybrid", "fulltext"):
        top = search(kb, "QZ-8841", k=3, mode=mode)
        assert top[0]["metadata"]["document_id"] == "catering-memo", (mode, top)
        assert top[0]["table"] == "knowledge"
    strict = search(kb, "How many bags can I check in for free?", k=5, min_score=0.6)
    assert [m["id"] for m in strict] == ["baggage-checked-allowance#0"]


def test_twenty_concurrent_documents_lose_and_duplicate_nothing(kb: TestClient) -> None:
    def send(index: int) -> dict[str, Any]:
        return run(
            kb,
            "document",
            {
                "document_id": f"bulk-{index}",
                "title": f"Route notice {index}",
                "text": f"Route notice {index}: the flight to city number {index} departs from "
                f"gate {index} and boards 40 minutes before departure. " * 4,
                "metadata": {"category": "notices", "batch": 7},
            },
        )

    with ThreadPoolExecutor(20) as pool:
        records = list(pool.map(send, range(20)))
    assert all(r["status"] == "completed" for r in records), records
    expected = sum(r["result"]["chunks"] for r in records)
    tables = {t["name"]: t for t in kb.get("/knowledge/tables").json()}
    matches = search(kb, "route notice gate boarding", k=50, filter={"batch": 7})
    ids = [m["id"] for m in matches]
    assert len(ids) == len(set(ids)) == expected
    assert {m["metadata"]["document_id"] for m in matches} == {f"bulk-{i}" for i in range(20)}
    assert tables["knowledge"]["rows"] >= 209 + expected


def test_vector_index_appears_past_the_threshold_and_results_stay_right(kb: TestClient) -> None:
    def rows() -> int:
        tables = {t["name"]: t for t in kb.get("/knowledge/tables").json()}
        return int(tables["knowledge"]["rows"])

    batch = 0
    while rows() <= 300 and batch < 10:  # the table passes the 300-row threshold
        text = " ".join(
            f"Timetable entry {batch}-{i}: flight SH{batch}{i:02d} leaves at {i % 24:02d}:15 "
            f"from terminal {i % 3 + 1}."
            for i in range(60)
        )
        run(
            kb,
            "document",
            {"document_id": f"filler-{batch}", "title": f"Timetable {batch}", "text": text},
        )
        batch += 1
    knowledge = {t["name"]: t for t in kb.get("/knowledge/tables").json()}["knowledge"]
    assert knowledge["rows"] > 300
    kinds = {index["type"] for index in knowledge["indexes"]}
    assert "FTS" in kinds and kinds & {"IvfHnswSq", "IVF_HNSW_SQ"}, knowledge["indexes"]
    assert knowledge["embedding_model"] == "all-MiniLM-L6-v2"
    matches = search(kb, "How many bags can I check in for free?", k=3)
    assert matches[0]["id"] == "baggage-checked-allowance#0"


def test_transcripts_become_searchable(kb: TestClient) -> None:
    record = run(
        kb, "speech", {"audio_base64": jfk_base64(), "index_transcript": True, "lookup": False}
    )
    assert record["status"] == "completed", record
    found = search(kb, "what you can do for your country", k=3, table="transcripts")
    assert found[0]["id"] == record["event_id"] and found[0]["table"] == "transcripts"
    assert found[0]["metadata"]["language"] == "en"
    hybrid = search(kb, "fellow Americans", k=1, table="transcripts", mode="hybrid")
    assert hybrid[0]["id"] == record["event_id"]


def test_ingest_cli_is_resumable(tmp_path: Path) -> None:
    source = tmp_path / "corpus.jsonl"
    source.write_text(
        "\n".join(
            f'{{"document_id": "faq-{i}", "title": "FAQ {i}", "text": "Answer number {i} about '
            f'excess baggage fees on route {i}.", "metadata": {{"category": "faq"}}}}'
            for i in range(12)
        )
    )
    uri = tmp_path / "kb"
    env = {"LANCEDB_URI": str(uri), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())}

    def ingest(*extra: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "skyhigh.cli.ingest", str(source), "--table", "faq", *extra],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return done.stderr

    assert "loaded 5 documents" in ingest("--limit", "5")  # an interrupted first run
    resumed = ingest()
    assert "loaded 7 documents" in resumed and "skipped 5 unchanged" in resumed
    rows = lancedb.connect(uri).open_table("faq").to_arrow()
    assert sorted(rows["document_id"].to_pylist()) == sorted(f"faq-{i}" for i in range(12))


def test_ingest_skips_the_seeded_corpus_as_unchanged(tmp_path: Path) -> None:
    # The shipped table is what `skyhigh.cli.seed` builds from data/knowledge.jsonl: its rows
    # carry the content hash that ingest computes, so nothing is embedded or written again.
    assert DEFAULT_SOURCE == ROOT / "data" / "knowledge.jsonl"
    settings = make_settings(tmp_path)  # a copy of lancedb_data/
    counts = ingest(DEFAULT_SOURCE, table="knowledge", settings=settings)
    assert counts == {"documents": 0, "skipped": 209, "chunks": 0}
    rows = lancedb.connect(settings.lancedb_uri).open_table("knowledge").count_rows()
    assert rows == 209
