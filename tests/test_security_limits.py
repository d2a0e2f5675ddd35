"""Limits a hostile client used to get around, each reproduced over HTTP against a real server.

Found (against the service before the fix): uploads whose lookup table did not exist were
transcribed for free; eight parallel uploads all passed a half-minute audio quota; one
principal's events filled everyone's queue; connections that sent nothing, trickled a header
byte a second or stalled in their body were held for minutes; one principal held any number
of live streams; `::a9fe:a9fe` passed the address policy; placeholder secrets started the
service; hand-made cursors gave 500; a 1 MB `model` came back in the error.

Principals are JWT subjects (each its own quotas and share of the queue). The worker is held
on purpose where a test needs events to stay pending: a speech event whose `audio_url` is a
local server that answers only when the test says so (loopback only, never another address).
"""

from __future__ import annotations

import base64
import json
import secrets
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect

from skyhigh.config import Settings
from skyhigh.domain.errors import InvalidCursor, QuotaExceeded
from skyhigh.intake.quotas import InProcessCounters, Quotas
from skyhigh.net.policy import blocked_reason
from skyhigh.secret_strength import estimated_bits
from skyhigh.store.cursors import decode_cursor
from tests.support.principals import (
    BODY_TIMEOUT_S,
    HEAD_TIMEOUT_S,
    JWT_SECRET,
    MAX_PENDING_PER_PRINCIPAL,
    MAX_STREAMS_PER_PRINCIPAL,
    Signer,
)
from tests.support.server import ServerProcess
from tests.support.settings import DATA, TOKENS, server_env
from tests.support.streams import ws_url

MAX_PER_PRINCIPAL = MAX_PENDING_PER_PRINCIPAL
MAX_STREAMS = MAX_STREAMS_PER_PRINCIPAL
JFK = (DATA / "jfk.wav").read_bytes()
SIGNER = Signer("limits-")
token = SIGNER.token


class HeldAudio:
    """A loopback HTTP server whose GET answers 404 only once `release()` is called."""

    def __init__(self) -> None:
        self.released = threading.Event()
        released = self.released

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
                released.wait(120)
                self.send_error(404)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/held.wav"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def release(self) -> None:
        self.released.set()

    def close(self) -> None:
        self.release()
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def server(jwt_server: ServerProcess) -> ServerProcess:
    """The session's JWT-mode server (tests/support/principals.py): these limits, one worker,
    AUDIO_MINUTES_PER_HOUR 0.3 (18 s: one JFK clip of 11 s fits, a second does not), held
    downloads from 127.0.0.1 allowed."""
    return jwt_server


def client(server: ServerProcess, sub: str, scope: str | None = None) -> httpx.Client:
    return SIGNER.client(server.url, sub, scope)


def post(
    http: httpx.Client, event_id: str, event_type: str, data: dict[str, Any]
) -> httpx.Response:
    body = {"event_id": event_id, "event_type": event_type, "event_data": data}
    return http.post("/events/", json=body)


def upload(http: httpx.Client, event_id: str, **fields: str) -> httpx.Response:
    return http.post(
        "/events/upload",
        data={"event_id": event_id, **fields},
        files={"file": ("jfk.wav", JFK, "audio/wav")},
    )


def finished(http: httpx.Client, event_id: str, timeout_s: float = 180.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        record: dict[str, Any] = http.get(f"/events/{event_id}").json()
        if record["status"] in ("completed", "failed"):
            return record
        assert time.monotonic() < deadline, f"{event_id} still {record['status']}"
        time.sleep(0.05)


# --------------------------------------------------------------------------- fairness, streams


@pytest.mark.slow
def test_one_principal_cannot_fill_the_queue_or_hold_streams(server: ServerProcess) -> None:
    """Was: five long uploads by one tenant gave everyone else 503; 20 streams, no cap."""
    held = HeldAudio()
    with (
        client(server, "holder") as holder,
        client(server, "alice") as alice,
        client(server, "bob") as bob,
        ExitStack() as streams,
    ):
        try:
            # The one worker waits on the held download: everything after it stays queued.
            assert post(holder, "hold", "speech", {"audio_url": held.url}).status_code == 202
            for index in range(1, MAX_PER_PRINCIPAL + 1):
                assert post(alice, f"a{index}", "query", {"text": "bags"}).status_code == 202
            refused = post(alice, "a-over", "query", {"text": "bags"})
            assert refused.status_code == 429, refused.text
            assert f"MAX_PENDING_PER_PRINCIPAL={MAX_PER_PRINCIPAL}" in refused.json()["detail"]
            assert "Retry-After" in refused.headers
            assert alice.get("/events/a-over").status_code == 404  # nothing was stored
            assert post(alice, "a2", "query", {"text": "bags"}).status_code == 202  # a replay
            assert post(bob, "b1", "query", {"text": "bags"}).status_code == 202  # others pass

            # Positions count the caller's own events only (the held one and bob's are not).
            assert alice.get("/events/a1").json()["queue_position"] == 0
            assert alice.get("/events/a2").json()["queue_position"] == 1
            assert bob.get("/events/b1").json()["queue_position"] == 0

            # Live streams: MAX_STREAMS per principal, SSE and WebSocket together.
            for _ in range(MAX_STREAMS - 1):
                sse = streams.enter_context(alice.stream("GET", "/events/a1/stream"))
                assert sse.status_code == 200
            auth = {"Authorization": f"Bearer {token('alice')}"}
            streams.enter_context(connect(ws_url(server.url, "a1"), additional_headers=auth))
            time.sleep(HEAD_TIMEOUT_S + 1)  # open streams outlive the connection timeouts
            over = alice.get("/events/a1/stream")
            assert over.status_code == 429, over.text
            assert f"MAX_STREAMS_PER_PRINCIPAL={MAX_STREAMS}" in over.json()["detail"]
            with pytest.raises(InvalidStatus) as denied:
                connect(ws_url(server.url, "a1"), additional_headers=auth, open_timeout=10)
            assert denied.value.response.status_code == 429
            with bob.stream("GET", "/events/b1/stream") as other:
                assert other.status_code == 200  # bob's streams are his own
        finally:
            streams.close()
            held.close()
        assert finished(holder, "hold")["status"] == "failed"
        for index in range(1, MAX_PER_PRINCIPAL + 1):
            assert finished(alice, f"a{index}")["status"] == "completed"
        # Streams closed and events finished: alice has her share back.
        assert post(alice, "a-again", "query", {"text": "bags"}).status_code == 202
        with alice.stream("GET", "/events/a-again/stream") as again:
            assert again.status_code == 200


# --------------------------------------------------------------------------- audio quota


@pytest.mark.slow
def test_uploads_for_a_missing_lookup_table_are_not_transcribed(server: ServerProcess) -> None:
    """Was: six uploads with table "no_such_table" were transcribed and streamed for free."""
    with client(server, "eve") as eve:
        for index in range(6):
            response = upload(eve, f"missing-{index}", lookup="true", table="no_such_table")
            assert response.status_code == 202, response.text
        for index in range(6):
            record = finished(eve, f"missing-{index}")
            assert record["error"]["code"] == "table_not_found", record
            assert record["result"] is None  # no transcript was made
        # Nothing was charged: the one clip the 18 s allow is still there, not a second.
        assert upload(eve, "paid-1", lookup="false").status_code == 202
        refused = upload(eve, "paid-2", lookup="false")
        assert refused.status_code == 429, refused.text
        assert "AUDIO_MINUTES_PER_HOUR" in refused.json()["detail"]
        assert finished(eve, "paid-1")["status"] == "completed"


@pytest.mark.slow
def test_concurrent_uploads_cannot_overshoot_the_audio_quota(server: ServerProcess) -> None:
    """Was: eight parallel uploads were all accepted; the quota said 1.5 of 0.5 minutes."""
    with client(server, "frank") as frank, ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(lambda i: upload(frank, f"burst-{i}"), range(8)))
        codes = sorted(response.status_code for response in responses)
        assert codes == [202] + [429] * 7, [r.text for r in responses]  # one clip fits in 18 s
        for response in responses:
            if response.status_code == 429:  # the quota refused them, not the queue share
                assert "AUDIO_MINUTES_PER_HOUR" in response.json()["detail"]
        for index, response in enumerate(responses):
            if response.status_code == 202:
                assert finished(frank, f"burst-{index}")["status"] == "completed"
        # Charged with the decoded length (11 s): the hour is still used up.
        assert upload(frank, "after").status_code == 429


class RecordingCounters(InProcessCounters):
    """In-process counters that remember the last total they returned."""

    last = 0.0

    def add_sync(self, key: str, amount: float, *, ttl_s: int) -> float:
        self.last = super().add_sync(key, amount, ttl_s=ttl_s)
        return self.last


def test_the_default_share_is_a_quarter_of_the_queue() -> None:
    for pending, share in ((1000, 250), (8, 2), (1, 1), (0, 1)):
        settings = Settings(_env_file=None, max_pending_events=pending)  # type: ignore[call-arg]
        assert settings.intake.pending_per_principal == share


def test_holds_are_settled_with_the_decoded_length_on_every_outcome() -> None:
    settings = Settings(_env_file=None, audio_minutes_per_hour=1)  # type: ignore[call-arg]
    counters = RecordingCounters()
    quotas = Quotas(counters, settings.intake, max_audio_s=50)
    loc = ("body",)

    async def scenario() -> None:
        hold = await quotas.hold_audio("ann", "speech", DATA / "jfk.wav", loc=loc)
        assert hold is not None and hold.seconds == pytest.approx(11.0, abs=0.1)
        assert counters.last == pytest.approx(11.0, abs=0.1)  # reserved from the probe
        # Failed after 5 s were decoded (say audio_too_long at 5 s): 5 s charged, not 11.
        quotas.charge_audio_sync("ann", 5.0, hold.stored())
        assert counters.last == pytest.approx(5.0)
        # Failed before decoding (a missing lookup table): the hold comes back whole.
        second = await quotas.hold_audio("ann", "speech", DATA / "jfk.wav", loc=loc)
        assert second is not None
        quotas.charge_audio_sync("ann", 0.0, second.stored())
        assert counters.last == pytest.approx(5.0)
        # Unknown length (an audio_url) holds MAX_AUDIO_SECONDS: 5 + 50 used, 11 more do not fit.
        unknown = await quotas.hold_audio("ann", "speech", None, loc=loc)
        assert unknown is not None and unknown.seconds == 50
        with pytest.raises(QuotaExceeded, match="AUDIO_MINUTES_PER_HOUR"):
            await quotas.hold_audio("ann", "speech", DATA / "jfk.wav", loc=loc)
        await quotas.release_audio("ann", unknown)  # e.g. the event turned out a replay
        assert await quotas.hold_audio("ann", "speech", DATA / "jfk.wav", loc=loc) is not None

    anyio.run(scenario)


# --------------------------------------------------------------------------- connections


def _raw(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _closed_after(sock: socket.socket, *, within_s: float) -> tuple[float, bytes]:
    """Seconds until the server closed `sock`, and what it sent before."""
    started = time.monotonic()
    sock.settimeout(within_s)
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except TimeoutError:
        raise AssertionError(f"still open after {within_s} s") from None
    except ConnectionResetError:
        pass
    return time.monotonic() - started, received


@pytest.mark.slow
def test_a_silent_connection_is_closed(server: ServerProcess) -> None:
    """Was: a connection that sent nothing was still open after 90 s."""
    with _raw(server) as sock:
        elapsed, received = _closed_after(sock, within_s=HEAD_TIMEOUT_S + 10)
    assert received.startswith(b"HTTP/1.1 408 "), received[:200]
    assert b"REQUEST_HEAD_TIMEOUT_S" in received
    assert elapsed >= HEAD_TIMEOUT_S - 1


@pytest.mark.slow
def test_trickled_heads_are_closed_while_health_answers(server: ServerProcess) -> None:
    """Was: 20 clients trickling one header byte a second were all held after 60 s."""
    sockets = [_raw(server) for _ in range(20)]
    stop = threading.Event()

    def trickle(sock: socket.socket) -> None:
        head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 1000
        for byte in head:
            if stop.is_set():
                return
            try:
                sock.send(bytes([byte]))
            except OSError:
                return
            time.sleep(0.5)

    threads = [threading.Thread(target=trickle, args=(s,), daemon=True) for s in sockets]
    for thread in threads:
        thread.start()
    try:
        started = time.monotonic()
        for sock in sockets:
            _closed_after(sock, within_s=max(1.0, started + HEAD_TIMEOUT_S + 10 - time.monotonic()))
        assert httpx.get(f"{server.url}/health", timeout=5).status_code == 200
    finally:
        stop.set()
        for sock in sockets:
            sock.close()


@pytest.mark.slow
def test_a_stalled_body_is_closed_and_a_slow_one_is_not(server: ServerProcess) -> None:
    """Was: an authenticated body trickled at one byte a second was held after 30 s."""
    auth = f"Authorization: Bearer {token('gina')}\r\n".encode()
    head = b"POST /events/ HTTP/1.1\r\nHost: x\r\n" + auth + b"Content-Type: application/json\r\n"
    body = json.dumps(
        {"event_id": "slow-1", "event_type": "query", "event_data": {"text": "bags " * 40}}
    ).encode()
    with _raw(server) as sock:
        sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body) + body[:10])
        elapsed, received = _closed_after(sock, within_s=BODY_TIMEOUT_S + 10)
    assert received.startswith(b"HTTP/1.1 408 "), received[:200]
    assert b"REQUEST_BODY_TIMEOUT_S" in received
    # A body that keeps coming, however slowly, is not cut: five pieces, each 0.6 of a limit
    # after the last, so the body takes 2.4 times either limit in all.
    with _raw(server) as sock:
        sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body))
        size = -(-len(body) // 5)
        pieces = [body[i : i + size] for i in range(0, len(body), size)]
        assert len(pieces) == 5
        for index, piece in enumerate(pieces):
            if index:
                time.sleep(min(HEAD_TIMEOUT_S, BODY_TIMEOUT_S) * 0.6)
            sock.sendall(piece)
        sock.settimeout(30)
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 202 "), answer[:300]


@pytest.mark.slow
def test_idle_keep_alive_is_bounded(server: ServerProcess) -> None:
    with _raw(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.5)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
        elapsed, _ = _closed_after(sock, within_s=HEAD_TIMEOUT_S + 10)
    assert elapsed <= HEAD_TIMEOUT_S + 2


# --------------------------------------------------------------------------- smaller


def _cursor(value: object) -> str:
    raw = json.dumps({"seq": value}) if not isinstance(value, str) else value
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


HAND_MADE = [1e30, True, 10**30, -1, "null", '{"seq": "1"}', "[1]", "\xff"]


@pytest.mark.parametrize("value", HAND_MADE)
def test_hand_made_cursors_are_refused(value: object) -> None:
    with pytest.raises(InvalidCursor):
        decode_cursor(_cursor(value))


@pytest.mark.slow
def test_hand_made_cursors_are_422_over_http(server: ServerProcess) -> None:
    """Was: {"seq": 1e30} and {"seq": true} gave 500."""
    with client(server, "hana") as hana:
        for value in HAND_MADE:
            response = hana.get("/events/", params={"cursor": _cursor(value)})
            assert response.status_code == 422, (value, response.text)
            assert response.json()["detail"][0]["type"] == "invalid_cursor"
        assert hana.get("/events/", params={"cursor": _cursor(5)}).status_code == 200


@pytest.mark.slow
def test_echoed_values_are_cut(server: ServerProcess) -> None:
    """Was: a 1 MB `model` on /v1 came back in a 1 MB 400."""
    with client(server, "ivan") as ivan:
        response = ivan.post(
            "/v1/audio/transcriptions",
            data={"model": "m" * 900_000},
            files={"file": ("jfk.wav", JFK, "audio/wav")},
        )
        assert response.status_code == 400, response.text[:300]
        assert len(response.content) < 2_000
        assert "900000 characters" in response.text
        body = {"event_id": "e", "event_type": "t" * 500_000, "event_data": {}}
        unknown = ivan.post("/events/", json=body)
        assert unknown.status_code == 422 and len(unknown.content) < 2_000


# --------------------------------------------------------------------------- addresses


EMBEDDED = [
    "::a9fe:a9fe",  # IPv4-compatible 169.254.169.254
    "::127.0.0.1",
    "::ffff:169.254.169.254",
    "::ffff:0:a9fe:a9fe",  # IPv4-translated
    "::ffff:0:7f00:1",
    "64:ff9b::a9fe:a9fe",  # NAT64
    "64:ff9b::10.0.0.1",
    "64:ff9b:1::a9fe:a9fe",  # local-use NAT64: refused outright
    "64:ff9b:1:ffff::808:808",
    "2002:a9fe:a9fe::1",  # 6to4
    "2002:7f00:1::",
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo: refused outright
    "2001:db8::5efe:10.0.0.1",  # ISATAP
    "fe80::5efe:8.8.8.8",  # ISATAP with a link-local prefix
]


@pytest.mark.parametrize("address", EMBEDDED)
def test_ipv6_forms_of_ipv4_are_judged_by_the_ipv4_address(address: str) -> None:
    assert blocked_reason(address) is not None


@pytest.mark.parametrize(
    "address",
    ["::a9fe:a9fe", "::ffff:0:a9fe:a9fe", "64:ff9b:1::7f00:1", "2001::7f00:1", "fe80::5efe:a00:1"],
)
def test_allow_private_never_opens_metadata_or_hidden_forms(address: str) -> None:
    assert blocked_reason(address, allow_private=True) is not None


@pytest.mark.parametrize("address", ["::127.0.0.1", "64:ff9b::10.0.0.1", "2002:0a00:0001::"])
def test_allow_private_opens_embedded_intranet_addresses(address: str) -> None:
    assert blocked_reason(address) is not None
    assert blocked_reason(address, allow_private=True) is None


@pytest.mark.parametrize("address", ["::ffff:8.8.8.8", "64:ff9b::8.8.8.8", "2a00:1450:4001::200e"])
def test_global_addresses_stay_allowed(address: str) -> None:
    assert blocked_reason(address) is None


@pytest.mark.slow
def test_embedded_metadata_urls_are_422_at_intake(server: ServerProcess) -> None:
    """Was: `::a9fe:a9fe` passed the policy. Refused before any connection is tried."""
    with client(server, "jo") as jo:
        for host in ("[::a9fe:a9fe]", "[64:ff9b:1::a9fe:a9fe]", "[2002:a9fe:a9fe::1]"):
            response = post(jo, "ssrf", "speech", {"audio_url": f"http://{host}/a.wav"})
            assert response.status_code == 422, (host, response.text)
            assert response.json()["detail"][0]["loc"][-1] == "audio_url"


# --------------------------------------------------------------------------- secrets


PLACEHOLDER_SECRETS = [
    ({"jwt_secret": "change-mechange-mechange-mechange-me"}, "placeholder"),
    ({"jwt_secret": "CHANGE-ME-CHANGE-ME-CHANGE-ME-CHANGE-ME"}, "placeholder"),
    ({"jwt_secret": "a" * 32}, "one repeated character"),
    ({"jwt_secret": "ab" * 24}, "too easy to guess"),
    ({"jwt_secret": "abcdefgh" * 5}, "too easy to guess"),
]
PLACEHOLDER_TOKENS = [
    ("CHANGE-ME", "placeholder"),
    ("Change_Me", "placeholder"),
    ("your-token-here", "placeholder"),
    ("a", "one repeated character"),
    ("aaaaaaaaaaaaaaaaaaaaaaaa", "one repeated character"),
    ("short-token", "too easy to guess"),
]


def settings_of(**values: str) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


@pytest.mark.parametrize(("values", "message"), PLACEHOLDER_SECRETS)
def test_weak_jwt_secrets_stop_the_start(values: dict[str, str], message: str) -> None:
    settings = settings_of(auth_mode="jwt", **values)
    with pytest.raises(ValueError, match=message) as refused:
        settings.auth.validate_auth()
    assert "secrets.token_urlsafe" in str(refused.value)  # says how to make a good one


@pytest.mark.parametrize(("value", "message"), PLACEHOLDER_TOKENS)
def test_weak_api_tokens_stop_the_start(value: str, message: str) -> None:
    settings = settings_of(api_tokens=f"{secrets.token_urlsafe(32)},{value}")
    with pytest.raises(ValueError, match=message) as refused:
        settings.auth.validate_auth()
    assert "secrets.token_urlsafe" in str(refused.value)


def test_generated_secrets_pass() -> None:
    # What scripts/dev.sh serve and the messages suggest, and what tests use.
    for _ in range(500):
        assert estimated_bits(secrets.token_urlsafe(32)) >= 128
        assert estimated_bits(secrets.token_hex(16)) >= 128
    settings_of(auth_mode="jwt", jwt_secret=JWT_SECRET).auth.validate_auth()
    settings_of(api_tokens=",".join(TOKENS)).auth.validate_auth()  # the tests' own tokens


@pytest.mark.slow
def test_a_placeholder_jwt_secret_does_not_start_a_server(tmp_path: Path) -> None:
    """Was: JWT_SECRET=change-mechange-mechange-mechange-me started; anyone could sign admin."""
    env = server_env(tmp_path, AUTH_MODE="jwt", JWT_SECRET="change-mechange-mechange-mechange-me")
    process = ServerProcess(env, tmp_path / "server.log")
    try:
        with pytest.raises(AssertionError, match="server exited"):
            process.start(timeout_s=120)
    finally:
        process.stop()
    assert "JWT_SECRET still holds a placeholder" in (tmp_path / "server.log").read_text()


# --------------------------------------------------------------------------- /status


STATUS_METRICS_TOKEN = "status-metrics-" + "9f3c2a7d41b86e05"


@pytest.mark.slow
def test_status_shows_worker_internals_only_to_admins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Was: the public /status listed running events' keys, hosts and pids in scale mode."""
    from fastapi.testclient import TestClient

    from main import create_app
    from skyhigh.processing.runtime import Runtime
    from tests.support.settings import make_settings

    key = "0123456789abcdef0123456789abcdef~alice-secret-call"
    workers = [{"id": "host-a:4242:abcd", "engine": "e", "model": "m", "running": [key]}]
    monkeypatch.setattr(Runtime, "scale_out", property(lambda self: True))
    monkeypatch.setattr(Runtime, "live_workers", lambda self: workers)
    settings = make_settings(
        tmp_path, auth_mode="jwt", jwt_secret=JWT_SECRET, metrics_token=STATUS_METRICS_TOKEN
    )
    with TestClient(create_app(settings)) as http:
        public = http.get("/status").json()["dispatcher"]["live_workers"]
        assert public == [{"engine": "e", "model": "m", "running": 1}]
        user = {"Authorization": f"Bearer {token('alice')}"}
        assert http.get("/status", headers=user).json()["dispatcher"]["live_workers"] == public
        for bearer in (token("root", "admin"), STATUS_METRICS_TOKEN):
            shown = http.get("/status", headers={"Authorization": f"Bearer {bearer}"})
            assert shown.json()["dispatcher"]["live_workers"] == workers
