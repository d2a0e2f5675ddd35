"""The knowledge base on object storage: LANCEDB_URI=s3://bucket/prefix against a real S3 API
server on loopback (moto's server in its own process; LanceDB speaks HTTP to it as to MinIO,
R2 or AWS S3). Seeding an empty bucket, documents, queries, deletes and the vector index all
go through the real app and its workers."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lancedb
import pytest
from fastapi.testclient import TestClient

from main import create_app
from skyhigh.config import Settings
from skyhigh.knowledge.storage import storage_options
from tests.support.client import run, search
from tests.support.services import S3Server
from tests.support.settings import AUTH, ROOT, make_settings, model_cache_dir

SEED_ROWS = 209  # data/knowledge.jsonl
MEMO = (
    "Catering memo: from March the economy snack box on short routes switches to a vegan "
    "wrap and a fruit cup. Suppliers must relabel boxes with product code QZ-8841."
)


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    server = S3Server()
    server.start()
    yield server
    server.stop()


def open_table(settings: Settings, name: str = "knowledge") -> Any:
    """The table as another process sees it, straight from the bucket."""
    db = lancedb.connect(settings.lancedb_uri, storage_options=storage_options(settings.knowledge))
    return db.open_table(name)


def test_aws_settings_become_storage_options(tmp_path: Path) -> None:
    env = {
        "LANCEDB_URI": "s3://bucket/kb",
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "AWS_ALLOW_HTTP": "true",
        "AWS_REGION": "eu-west-3",
        "AWS_ACCESS_KEY_ID": "key-id",
        "AWS_SECRET_ACCESS_KEY": "secret-value",
    }
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert storage_options(settings.knowledge) == {
        "aws_endpoint": "http://minio:9000",
        "allow_http": "true",
        "aws_region": "eu-west-3",
        "aws_access_key_id": "key-id",
        "aws_secret_access_key": "secret-value",
    }
    assert "secret-value" not in repr(settings)
    # AWS_ENDPOINT wins over AWS_ENDPOINT_URL; a local directory takes no options at all.
    both = make_settings(
        tmp_path, lancedb_uri="s3://b/p", aws_endpoint="http://a", aws_endpoint_url="http://b"
    )
    assert storage_options(both.knowledge) == {"aws_endpoint": "http://a"}
    local = make_settings(tmp_path, aws_endpoint="http://a", aws_region="eu-west-3")
    assert storage_options(local.knowledge) == {}


@pytest.mark.slow
def test_seed_cli_fills_an_empty_bucket(s3: S3Server, tmp_path: Path) -> None:
    bucket = s3.create_bucket()
    assert s3.keys(bucket) == []
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(Path.home()),
        "PYTHONPATH": str(ROOT),
        "LANCEDB_URI": f"s3://{bucket}/kb",
        "MODEL_CACHE_DIR": str(model_cache_dir()),
        **s3.env(),
    }

    def seed(*extra: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "skyhigh.cli.seed", *extra],
            cwd=tmp_path,  # nothing may land in a local directory named like the URI
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return done

    assert f"built 'knowledge' in s3://{bucket}/kb: {SEED_ROWS} entries" in seed().stdout
    assert "already exists" in seed("--if-empty").stderr
    assert list(tmp_path.iterdir()) == []
    keys = s3.keys(bucket)
    assert keys and all(key.startswith("kb/knowledge.lance/") for key in keys)
    settings = make_settings(tmp_path, lancedb_uri=f"s3://{bucket}/kb", **s3.settings())
    table = open_table(settings)
    assert table.count_rows() == SEED_ROWS
    assert {index.index_type for index in table.list_indices()} == {"FTS"}


@pytest.fixture(scope="module")
def s3_settings(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """An empty bucket, seeded when the app starts; a test-sized vector index threshold (the
    seed has 209 rows), and index upkeep after every write, rebuilding past one segment."""
    return make_settings(
        tmp_path_factory.mktemp("s3kb"),
        lancedb_uri=f"s3://{s3.create_bucket()}/skyhigh/kb",
        seed_empty_knowledge=True,
        vector_index_min_rows=256,
        vector_index_max_segments=1,
        optimize_after_rows=1,
        chunk_size=300,
        chunk_overlap=60,
        **s3.settings(),
    )


@pytest.fixture(scope="module")
def s3_app(s3_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(s3_settings), headers=AUTH) as client:
        yield client


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.mark.slow
def test_app_seeds_an_empty_bucket_and_queries_it(
    s3_app: TestClient, s3_settings: Settings
) -> None:
    tables = {t["name"]: t for t in s3_app.get("/knowledge/tables").json()}
    assert tables["knowledge"]["rows"] == SEED_ROWS
    matches = search(s3_app, "How many bags can I check in for free?", k=3)
    assert matches[0]["id"] == "baggage-checked-allowance#0"
    assert open_table(s3_settings).count_rows() == SEED_ROWS


@pytest.mark.slow
def test_document_query_delete_on_the_bucket(s3_app: TestClient, s3_settings: Settings) -> None:
    stored = run(s3_app, "document", {"document_id": "memo", "title": "Catering", "text": MEMO})
    assert stored["status"] == "completed", stored
    for mode in ("hybrid", "fulltext"):
        top = search(s3_app, "QZ-8841", k=3, mode=mode)
        assert top[0]["metadata"]["document_id"] == "memo", (mode, top)
    # Written to the bucket, not a local cache: a separate connection reads it back.
    table = open_table(s3_settings)
    assert table.count_rows("document_id = 'memo'") == 1

    deleted = run(s3_app, "document_delete", {"document_id": "memo"})
    assert deleted["result"]["deleted_chunks"] == 1
    for mode in ("hybrid", "fulltext", "vector"):
        found = search(s3_app, "QZ-8841 catering snack box", k=10, mode=mode)
        assert all(m["metadata"]["document_id"] != "memo" for m in found), (mode, found)
    assert open_table(s3_settings).count_rows("document_id = 'memo'") == 0


@pytest.mark.slow
def test_vector_index_is_built_and_rebuilt_on_the_bucket(
    s3_app: TestClient, s3_settings: Settings
) -> None:
    def send(batch: int) -> None:
        text = " ".join(
            f"Timetable entry {batch}-{i}: flight SH{batch}{i:02d} leaves at {i % 24:02d}:15 "
            f"from terminal {i % 3 + 1}."
            for i in range(60)
        )
        record = run(
            s3_app,
            "document",
            {"document_id": f"timetable-{batch}", "title": f"Timetable {batch}", "text": text},
        )
        assert record["status"] == "completed", record

    def knowledge() -> dict[str, Any]:
        tables = {t["name"]: t for t in s3_app.get("/knowledge/tables").json()}
        return dict(tables["knowledge"])

    batch = 0
    while knowledge()["rows"] <= 256 and batch < 10:  # the writer builds the vector index
        send(batch)
        batch += 1
    assert {index["type"] for index in knowledge()["indexes"]} & {"IvfHnswSq", "IVF_HNSW_SQ"}
    writer_log = Records()
    logging.getLogger("skyhigh.knowledge.writer").addHandler(writer_log)
    try:
        send(batch)  # upkeep folds the new rows in as a second segment, then rebuilds whole
        deadline = time.monotonic() + 120  # upkeep runs after the write has completed
        while "vector index rebuilt" not in writer_log.messages and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        logging.getLogger("skyhigh.knowledge.writer").removeHandler(writer_log)
    assert "vector index rebuilt" in writer_log.messages
    table = open_table(s3_settings)
    vector = next(i for i in table.list_indices() if tuple(i.columns) == ("vector",))
    stats = table.index_stats(vector.name)
    assert stats.num_indices == 1 and stats.num_unindexed_rows == 0
    matches = search(s3_app, "How many bags can I check in for free?", k=3)
    assert matches[0]["id"] == "baggage-checked-allowance#0"
    timetable = search(s3_app, f"flight SH{batch}05 terminal", k=5, mode="hybrid")
    assert timetable[0]["metadata"]["document_id"] == f"timetable-{batch}"
