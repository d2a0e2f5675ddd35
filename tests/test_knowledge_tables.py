"""The knowledge tables without a model: typed filters, per-owner transcript rows and their
migration, phrase search, the registry's facts, seed and documents building the same rows, and
an import graph without cycles. Real LanceDB, four-dimensional vectors."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pytest
from lancedb.index import FTS

from skyhigh.cli.seed import DEFAULT_SOURCE, entry_document, entry_rows
from skyhigh.domain.events import Segment, StepFailed, Transcript
from skyhigh.domain.payloads import RESERVED_METADATA
from skyhigh.domain.tenancy import event_key, owner_namespace
from skyhigh.knowledge.documents import document_rows
from skyhigh.knowledge.embedding import Backend
from skyhigh.knowledge.search import KnowledgeBase
from skyhigh.knowledge.sql import Reader, build_where
from skyhigh.knowledge.tables import (
    documents_schema,
    has_positions,
    speaker_turns,
    text_index,
    transcript_row,
    transcripts_schema,
)
from skyhigh.knowledge.writer import KnowledgeWriter, WriteOp, WriterConfig
from skyhigh.processing.celery_app import EVENTS_QUEUE, KNOWLEDGE_QUEUE, queue_for
from skyhigh.processing.registry import AUDIO_TYPES, EVENT_TYPES, KNOWLEDGE_WRITING_TYPES
from tests.support.settings import ROOT

DIM = 4
ALICE, BOB = "jwt:alice", "jwt:bob"


def vec(*values: float) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.asarray(values, dtype=np.float32)


class FixedEmbedder:
    """Stands in for MiniLM where only the row shape matters (the model is tested elsewhere)."""

    name = "fixed"
    backend: Backend = "onnx"
    dimension = DIM

    def embed(self, texts: list[str], *, batch_size: int = 64) -> np.ndarray[Any, Any]:
        return np.asarray([[len(t) % 7, 1, 0, 0] for t in texts], dtype=np.float32)


@pytest.fixture
def base(tmp_path: Path) -> tuple[KnowledgeBase, KnowledgeWriter]:
    kb = KnowledgeBase(str(tmp_path / "kb"), default_table="knowledge")
    writer = KnowledgeWriter(kb, WriterConfig(dimension=DIM))
    return kb, writer  # not started: writes apply inline, through the service's write path


# --------------------------------------------------------------------------- typed filters


@pytest.mark.parametrize(
    ("filter_", "needs"),
    [
        ({"chunk": "abc"}, "'chunk' needs an integer (int32), got str"),
        ({"chunk": True}, "'chunk' needs an integer"),
        ({"chunk": 2**40}, "from -2147483648 to 2147483647"),
        ({"category": 1}, "'category' needs a string, got int"),
        ({"category": ["a", 2]}, "'category' needs a string, got int"),
        ({"tags": [3]}, "'tags' needs a string, got int"),
        ({"created_at": "2020"}, "'created_at' needs an ISO 8601 timestamp"),
        ({"created_at": 2020}, "'created_at' needs an ISO 8601 timestamp"),
        ({"vector": "x"}, "unknown filter column 'vector'"),
    ],
)
def test_filter_values_must_fit_the_column_type(filter_: dict[str, Any], needs: str) -> None:
    schema = documents_schema(DIM).append(pa.field("created_at", pa.timestamp("us", tz="UTC")))
    with pytest.raises(StepFailed) as failed:
        build_where(filter_, schema)
    assert failed.value.code == "invalid_filter" and needs in failed.value.message


def test_well_typed_filters_become_literals() -> None:
    schema = documents_schema(DIM).append(pa.field("created_at", pa.timestamp("us", tz="UTC")))
    where = build_where(
        {"chunk": 2, "category": ["a", "b'c"], "tags": "x", "created_at": "2024-05-01T14:00+02:00"},
        schema,
    )
    assert where == (
        "chunk = 2 AND category IN ('a', 'b''c') AND array_has_any(tags, ['x']) "
        "AND created_at = TIMESTAMP '2024-05-01 12:00:00'"
    )


def test_a_bad_filter_is_the_clients_error_in_every_mode(
    base: tuple[KnowledgeBase, KnowledgeWriter],
) -> None:
    kb, writer = base
    document = entry_document(json.loads(DEFAULT_SOURCE.read_text().splitlines()[0]))
    writer.submit(
        WriteOp("knowledge", "documents", document_rows(document, ["text"], vec(1, 0, 0, 0)[None]))
    ).result()
    for mode in ("vector", "fulltext", "hybrid"):
        with pytest.raises(StepFailed) as failed:
            kb.search(vec(1, 0, 0, 0), text="bags", filter={"chunk": "abc"}, mode=mode)  # type: ignore[arg-type]
        assert failed.value.code == "invalid_filter", (mode, failed.value.message)


# --------------------------------------------------------------------------- phrase search


def test_phrase_search_works_and_an_old_index_says_why_not(
    base: tuple[KnowledgeBase, KnowledgeWriter], tmp_path: Path
) -> None:
    kb, writer = base
    texts = ["How many checked bags are free?", "Bags checked at the gate.", "Pets in the cabin."]
    rows = [
        {**row, "id": f"d{i}#0", "document_id": f"d{i}"}
        for i, text in enumerate(texts)
        for row in document_rows(
            entry_document({"id": f"d{i}", "title": "t", "text": text, "category": "c"}),
            [text],
            vec(1, i, 0, 0)[None],
        )
    ]
    writer.submit(WriteOp("knowledge", "documents", rows)).result()
    for mode in ("fulltext", "hybrid"):
        found = kb.search(vec(1, 0, 0, 0), text='"checked bags"', mode=mode, k=3)  # type: ignore[arg-type]
        assert found[0].id == "d0#0", mode
    # A table indexed before phrase search: a truthful message, then the writer's start fixes it.
    table = kb.table("knowledge")
    table.create_index("text", config=FTS(), replace=True)
    with pytest.raises(StepFailed) as failed:
        kb.search(vec(1, 0, 0, 0), text='"checked bags"', mode="hybrid")
    assert failed.value.code == "invalid_query"
    assert "phrase" in failed.value.message and "no full-text index yet" not in failed.value.message
    assert [m.id for m in kb.search(vec(1, 0, 0, 0), text="checked bags", mode="fulltext")]
    writer.start()
    writer.stop()
    index = text_index(kb.table("knowledge"))
    assert index is not None and has_positions(index)
    assert kb.search(vec(1, 0, 0, 0), text='"checked bags"', mode="fulltext")[0].id == "d0#0"


def test_without_a_text_index_the_message_says_so(tmp_path: Path) -> None:
    db = lancedb.connect(tmp_path / "kb")
    rows = [{"id": "a", "title": "t", "text": "bags", "vector": [1.0, 0, 0, 0]}]
    db.create_table("bare", data=pa.Table.from_pylist(rows, schema=_bare_schema()))
    kb = KnowledgeBase(str(tmp_path / "kb"), default_table="bare")
    with pytest.raises(StepFailed, match="no full-text index yet"):
        kb.search(vec(1, 0, 0, 0), text="bags", mode="hybrid")


def _bare_schema() -> pa.Schema:
    return pa.schema(
        [
            pa.field("id", pa.string()),
            pa.field("title", pa.string()),
            pa.field("text", pa.string()),
            pa.field("vector", pa.list_(pa.float32(), DIM)),
        ]
    )


# --------------------------------------------------------------------------- transcripts


def _index(writer: KnowledgeWriter, owner: str, event_id: str, text: str) -> None:
    key = event_key(owner, event_id)
    assert key is not None
    row = transcript_row(key, text=text, language="en", vector=vec(1, 0, 0, 0))
    writer.submit(WriteOp("transcripts", "transcripts", [row])).result()


def test_transcripts_belong_to_their_owner(base: tuple[KnowledgeBase, KnowledgeWriter]) -> None:
    kb, writer = base
    _index(writer, ALICE, "e1", "alice's checked bags")
    _index(writer, BOB, "e1", "bob's checked bags")
    _index(writer, "token", "e2", "the static token's checked bags")

    def seen(reader: Reader | None, **options: Any) -> list[tuple[str, str]]:
        matches = kb.search(
            vec(1, 0, 0, 0),
            text="checked bags",
            table="transcripts",
            k=10,
            reader=reader,
            **options,
        )
        return sorted((m.id, m.text) for m in matches)

    for mode in ("vector", "fulltext", "hybrid"):
        assert seen(Reader(owner_namespace(ALICE)), mode=mode) == [("e1", "alice's checked bags")]
    assert seen(Reader(owner_namespace("token"))) == [("e2", "the static token's checked bags")]
    assert len(seen(Reader.everyone())) == 3
    assert seen(None) == []  # no reader: nobody's rows
    # A filter cannot reach past the owner: bob's event id names only bob's row for bob.
    assert seen(Reader(owner_namespace(BOB)), filter={"event_id": "e1"}) == [
        ("e1", "bob's checked bags")
    ]
    for match in kb.search(vec(1, 0, 0, 0), table="transcripts", k=10, reader=Reader.everyone()):
        shown = json.dumps(match.model_dump(mode="json"))
        assert "~" not in shown and owner_namespace(ALICE) not in shown, shown
    with pytest.raises(StepFailed, match="unknown filter column 'owner'"):
        seen(Reader(owner_namespace(BOB)), filter={"owner": owner_namespace(ALICE)})


def test_transcripts_from_before_owners_are_re_keyed(tmp_path: Path) -> None:
    legacy = pa.schema([f for f in transcripts_schema(DIM) if f.name not in ("owner", "speaker")])
    alice_key = event_key(ALICE, "old-1")
    rows = [
        {"id": key, "event_id": key, "title": f"Transcript of {key}", "text": "bags",
         "language": "en", "created_at": None, "vector": [1.0, 0, 0, 0]}
        for key in (alice_key, "old-2")
    ]  # fmt: skip
    lancedb.connect(tmp_path / "kb").create_table(
        "transcripts", data=pa.Table.from_pylist(rows, schema=legacy)
    )
    kb = KnowledgeBase(str(tmp_path / "kb"), default_table="knowledge")
    alice = Reader(owner_namespace(ALICE))
    # Before the writer ran: not shown to anyone but an admin.
    assert kb.search(vec(1, 0, 0, 0), table="transcripts", reader=alice) == []
    writer = KnowledgeWriter(kb, WriterConfig(dimension=DIM))
    writer.start()
    writer.stop()
    found = kb.search(vec(1, 0, 0, 0), table="transcripts", reader=alice)
    assert [(m.id, m.title, m.metadata["event_id"]) for m in found] == [
        ("old-1", "Transcript of old-1", "old-1")
    ]
    static = kb.search(vec(1, 0, 0, 0), table="transcripts", reader=Reader("token"))
    assert [m.id for m in static] == ["old-2"]
    # ... and the table can be filtered by speaker: its old rows have none.
    assert found[0].metadata["speaker"] is None
    assert (
        kb.search(vec(1, 0, 0, 0), table="transcripts", reader=alice, filter={"speaker": "A"}) == []
    )


def _segment(index: int, text: str, speaker: str | None) -> Segment:
    return Segment(
        id=index,
        start=index,
        end=index + 1,
        text=text,
        avg_logprob=0,
        no_speech_prob=0,
        speaker=speaker,
    )


def test_diarized_transcripts_are_rows_per_speaker_turn(tmp_path: Path) -> None:
    """A table from before diarization (owners, no `speaker`) keeps its rows and gains the
    column; a diarized transcript becomes one row per turn, found by a `speaker` filter."""
    before = pa.schema([f for f in transcripts_schema(DIM) if f.name != "speaker"])
    old_key = event_key(ALICE, "old")
    assert old_key is not None
    old = transcript_row(old_key, text="no speakers here", language="en", vector=vec(1, 0, 0, 0))
    del old["speaker"]
    lancedb.connect(tmp_path / "kb").create_table(
        "transcripts", data=pa.Table.from_pylist([old], schema=before)
    )
    kb = KnowledgeBase(str(tmp_path / "kb"), default_table="knowledge")
    writer = KnowledgeWriter(kb, WriterConfig(dimension=DIM))  # not started: applies inline
    transcript = Transcript(
        text=" Hello there. How are you? Fine. Thanks.",
        language="en",
        duration_s=5,
        segments=[
            _segment(0, " Hello there.", "Ann"),
            _segment(1, " How are you?", "Ann"),
            _segment(2, " ", "SPEAKER_01"),  # nothing said: no row
            _segment(3, " Fine.", "SPEAKER_01"),
            _segment(4, " Thanks.", "Ann"),
        ],
    )
    turns = speaker_turns(transcript)
    assert turns == [
        ("Ann", "Hello there. How are you?"),
        ("SPEAKER_01", "Fine."),
        ("Ann", "Thanks."),
    ]
    key = event_key(ALICE, "call")
    assert key is not None
    rows = [
        transcript_row(key, text=text, language="en", vector=vec(1, 0, 0, 0), speaker=who, turn=n)
        for n, (who, text) in enumerate(turns)
    ]
    writer.submit(WriteOp("transcripts", "transcripts", rows)).result()
    alice = Reader(owner_namespace(ALICE))

    def found(filter_: dict[str, Any]) -> list[tuple[str, str, Any]]:
        matches = kb.search(
            vec(1, 0, 0, 0), table="transcripts", k=10, reader=alice, filter=filter_
        )
        return sorted((m.id, m.text, m.metadata["speaker"]) for m in matches)

    assert found({"speaker": "Ann"}) == [
        ("call", "Hello there. How are you?", "Ann"),
        ("call", "Thanks.", "Ann"),
    ]
    assert found({"speaker": ["SPEAKER_01"], "event_id": "call"}) == [
        ("call", "Fine.", "SPEAKER_01")
    ]
    assert found({"event_id": "old"}) == [("old", "no speakers here", None)]
    assert (
        speaker_turns(transcript.model_copy(update={"segments": [_segment(0, " Hi.", None)]})) == []
    )
    with pytest.raises(StepFailed, match="filter 'speaker' needs a string"):
        found({"speaker": 1})


def test_documents_never_go_into_a_transcripts_table(
    base: tuple[KnowledgeBase, KnowledgeWriter],
) -> None:
    kb, writer = base
    _index(writer, ALICE, "e1", "alice's words")
    document = entry_document({"id": "x", "title": "t", "text": "x", "category": "c"})
    rows = document_rows(document, ["x"], vec(1, 0, 0, 0)[None])
    for op in (
        WriteOp("transcripts", "documents", rows, ["x"]),
        WriteOp("transcripts", "documents", [], ["x"]),
    ):
        with pytest.raises(StepFailed) as failed:
            writer.submit(op).result()
        assert failed.value.code == "table_not_writable"
    assert kb.table("transcripts").count_rows() == 1


# --------------------------------------------------------------------------- one definition


def test_seed_and_documents_build_the_same_rows() -> None:
    entries = [json.loads(line) for line in DEFAULT_SOURCE.read_text().splitlines()[:3]]
    embedder = FixedEmbedder()
    seeded = entry_rows(entries, embedder)
    for entry, row in zip(entries, seeded, strict=True):
        document = entry_document(entry)
        vectors = embedder.embed([f"{document.title}\n{document.text}"])
        (expected,) = document_rows(
            document, [document.text], vectors, extra={"tags": entry["tags"]}
        )
        assert row == expected and row["id"] == f"{entry['id']}#0"
    shipped = lancedb.connect(ROOT / "lancedb_data").open_table("knowledge")
    ids = set(shipped.to_arrow()["id"].to_pylist())
    assert {f"{e['id']}#0" for e in entries} <= ids


def test_reserved_names_are_the_document_tables_own_columns() -> None:
    schema = documents_schema(DIM)
    assert RESERVED_METADATA == set(schema.names) - {"category"}


def test_the_registry_owns_the_event_type_facts() -> None:
    assert KNOWLEDGE_WRITING_TYPES == {"document", "document_delete"}
    assert AUDIO_TYPES == {"speech"}
    for name in EVENT_TYPES:
        expected = KNOWLEDGE_QUEUE if name in KNOWLEDGE_WRITING_TYPES else EVENTS_QUEUE
        assert queue_for(name) == expected
    # No module outside the registry tells types apart by their names.
    pattern = ('== "speech"', "== 'speech'", '{"document", "document_delete"}', '{"speech"}')
    for path in [ROOT / "endpoint.py", *sorted((ROOT / "skyhigh").rglob("*.py"))]:
        if path.name == "registry.py":
            continue
        source = path.read_text()
        assert not any(p in source for p in pattern), path


def _imports(path: Path, package: str) -> set[str]:
    """Every skyhigh module `path` imports, at any depth (function-level imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(package):
            found.add(node.module)
            # `from package import module` names the submodule, not only the package
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith(package)}
    return found


def test_no_import_cycles_in_the_package() -> None:
    modules = {
        ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__"): path
        for path in (ROOT / "skyhigh").rglob("*.py")
    }
    # A package's __init__ importing its own submodules is not a cycle: drop self-edges.
    graph = {
        name: (_imports(path, "skyhigh") & modules.keys()) - {name}
        for name, path in modules.items()
    }
    cycles: list[list[str]] = []

    def visit(name: str, stack: list[str]) -> None:
        if name in stack:
            cycles.append(stack[stack.index(name) :] + [name])
            return
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*stack, name])
        done.add(name)

    done: set[str] = set()
    for name in sorted(graph):
        visit(name, [])
    assert not cycles, cycles
