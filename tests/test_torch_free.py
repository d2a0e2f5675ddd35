"""The torch-free serving path: with faster-whisper and the ONNX embedder, a whole
service (lifespan, worker, a transcription and a query) runs without importing torch."""

from __future__ import annotations

from pathlib import Path

from skyhigh.config import Settings
from skyhigh.knowledge.onnx_export import ensure_onnx_model
from tests.support.settings import model_cache_dir
from tests.support.torch_free import fresh_interpreter

# Runs in a fresh interpreter: the test process itself has torch loaded by other tests.
SERVICE = r"""
import json, sys, time
from fastapi.testclient import TestClient
from tests.support.settings import AUTH, make_settings
from tests.support.client import jfk_base64, wait_terminal
from main import create_app
from pathlib import Path

settings = make_settings(
    Path(sys.argv[1]), whisper_engine="faster-whisper", embedding_backend="onnx"
)
with TestClient(create_app(settings), headers=AUTH) as client:
    events = {
        "speech-1": ("speech", {"audio_base64": jfk_base64(), "k": 1}),
        "query-1": ("query", {"text": "Can I bring my cat in the cabin?", "k": 1}),
        "hybrid-1": ("query", {"text": "cat cabin", "k": 1, "mode": "hybrid"}),
    }
    for event_id, (event_type, data) in events.items():
        body = {"event_id": event_id, "event_type": event_type, "event_data": data}
        assert client.post("/events/", json=body).status_code == 202
    records = {event_id: wait_terminal(client.get, event_id) for event_id in events}
loaded = sorted(
    name for name in sys.modules
    if name.split(".")[0] in {"torch", "whisper", "sentence_transformers", "transformers"}
)
print(json.dumps({"records": records, "loaded": loaded}))
"""


def test_faster_whisper_and_onnx_never_import_torch(tmp_path: Path) -> None:
    # The export needs torch: made (or found) here, in the test process, as an image build does.
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    ensure_onnx_model(settings.embedding_model, cache_dir=model_cache_dir())
    outcome = fresh_interpreter(SERVICE, str(tmp_path))
    assert outcome["loaded"] == [], outcome["loaded"]
    records = outcome["records"]
    assert all(r["status"] == "completed" for r in records.values()), records
    speech = records["speech-1"]["result"]
    assert (
        "country" in speech["transcript"]["text"] and speech["model"]["engine"] == "faster-whisper"
    )
    assert records["query-1"]["result"]["matches"][0]["id"] == "pets-in-cabin#0"
    assert records["hybrid-1"]["result"]["matches"][0]["id"] == "pets-in-cabin#0"
