"""Audio intake: base64 and spooling (skyhigh.intake.spool), the URL policy and fetch
(skyhigh.net, skyhigh.speech.audio_url), ffmpeg decoding (skyhigh.speech.decode).

Network tests talk only to an http.server on 127.0.0.1. Refusals of private or public targets are
exercised through the classifier or a monkeypatched getaddrinfo, with sending disabled, so no
packet ever leaves loopback.
"""

from __future__ import annotations

import base64
import math
import os
import socket
import ssl
import subprocess
import threading
import time
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from skyhigh.domain.events import ErrorCode, StepFailed
from skyhigh.intake.spool import decode_base64_audio, write_spool_file
from skyhigh.net.policy import blocked_reason
from skyhigh.speech import audio_url
from skyhigh.speech.audio_url import check_audio_url, fetch_audio_url
from skyhigh.speech.decode import SAMPLE_RATE, load_audio
from tests.speech_helpers import probe_duration_s

PAYLOAD = os.urandom(50_000)
STOP = threading.Event()  # lets slow handlers end early at teardown


def raises_code(code: ErrorCode, call: Callable[[], object]) -> StepFailed:
    with pytest.raises(StepFailed) as caught:
        call()
    assert caught.value.code == code, caught.value.message
    return caught.value


# --------------------------------------------------------------------------- base64


def test_base64_plain_round_trip() -> None:
    encoded = base64.b64encode(PAYLOAD).decode()
    assert decode_base64_audio(encoded, max_bytes=len(PAYLOAD)) == PAYLOAD


@pytest.mark.parametrize(
    "prefix", ["data:audio/wav;base64,", "DATA:audio/webm;codecs=opus;base64,"]
)
def test_base64_data_url_round_trip(prefix: str) -> None:
    encoded = prefix + base64.b64encode(PAYLOAD).decode()
    assert decode_base64_audio(encoded, max_bytes=len(PAYLOAD)) == PAYLOAD


def test_base64_tolerates_line_breaks() -> None:
    encoded = "\n" + base64.encodebytes(PAYLOAD).decode().replace("\n", "\r\n")
    assert decode_base64_audio(encoded, max_bytes=len(PAYLOAD)) == PAYLOAD


@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_base64_accepts_exactly_max_bytes(size: int) -> None:
    data = os.urandom(size)
    assert decode_base64_audio(base64.b64encode(data).decode(), max_bytes=size) == data


@pytest.mark.parametrize(
    "value",
    [
        "abc$",  # outside the alphabet
        "QU=JD",  # padding inside
        "QUJDRA",  # missing padding
        "QUJ\u00e9",  # non-ASCII
        "data:text/plain;base64,QUJD",  # not audio
        "data:audio/wav,QUJD",  # not base64-encoded data URL
        "data:audio/wav;base64",  # no comma
    ],
)
def test_base64_invalid(value: str) -> None:
    raises_code(ErrorCode.INVALID_BASE64, lambda: decode_base64_audio(value, max_bytes=1000))


def test_base64_urlsafe_alphabet_gets_a_hint() -> None:
    encoded = base64.urlsafe_b64encode(b"\xfb\xff\xfe" * 10).decode()
    error = raises_code(
        ErrorCode.INVALID_BASE64, lambda: decode_base64_audio(encoded, max_bytes=1000)
    )
    assert "URL-safe" in error.message


def test_base64_too_large_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(*args: Any, **kwargs: Any) -> bytes:
        raise AssertionError("decoded an oversized payload")

    monkeypatch.setattr(base64, "b64decode", no_decoding)
    encoded = base64.b64encode(bytes(1001)).decode()
    raises_code(ErrorCode.AUDIO_TOO_LARGE, lambda: decode_base64_audio(encoded, max_bytes=1000))


def test_base64_empty() -> None:
    raises_code(ErrorCode.EMPTY_AUDIO, lambda: decode_base64_audio(" \n", max_bytes=10))


# --------------------------------------------------------------------------- URL policy


def test_url_feature_off() -> None:
    error = raises_code(
        ErrorCode.URL_NOT_ALLOWED, lambda: check_audio_url("https://a.example/x", allowed_hosts=[])
    )
    assert "AUDIO_URL_ALLOWED_HOSTS" in error.message


@pytest.mark.parametrize(
    "url", ["ftp://a.example/x.wav", "file:///etc/passwd", "a.example/x.wav", "http:///x.wav"]
)
def test_url_needs_http_and_a_host(url: str) -> None:
    raises_code(ErrorCode.URL_NOT_ALLOWED, lambda: check_audio_url(url, allowed_hosts=["*"]))


def test_url_host_not_in_list() -> None:
    error = raises_code(
        ErrorCode.URL_NOT_ALLOWED,
        lambda: check_audio_url(
            "https://user:hunter2@b.example/x.wav", allowed_hosts=["a.example"]
        ),
    )
    assert "b.example" in error.message
    assert "hunter2" not in error.message


@pytest.mark.parametrize(
    ("host", "allowed"),
    [
        ("a.example.com", True),
        ("x.y.example.com", True),
        ("A.Example.COM.", True),
        ("example.com", False),  # the wildcard is for subdomains only
        ("badexample.com", False),
        ("example.com.evil.test", False),
    ],
)
def test_url_wildcard(host: str, allowed: bool) -> None:
    url = f"https://{host}/x.wav"
    if allowed:
        check_audio_url(url, allowed_hosts=["*.example.com"])
    else:
        raises_code(
            ErrorCode.URL_NOT_ALLOWED, lambda: check_audio_url(url, allowed_hosts=["*.example.com"])
        )


def test_url_star_and_ip_literals() -> None:
    check_audio_url("http://anything.test/x", allowed_hosts=["*"])
    check_audio_url("http://[::1]:8000/x", allowed_hosts=["[0:0::1]"])
    check_audio_url("http://127.0.0.1:8000/x", allowed_hosts=["127.0.0.1"])


# --------------------------------------------------------------------------- IP classifier


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("10.0.0.1", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "metadata"),
        ("fd00:ec2::254", "metadata"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:169.254.169.254", "metadata"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),
        ("224.0.0.1", "multicast"),
        ("100.64.0.1", "non-global"),  # carrier-grade NAT
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("2002:a00:1::", "private"),  # 6to4 of 10.0.0.1
    ],
)
def test_classifier_blocks(address: str, kind: str) -> None:
    reason = blocked_reason(address)
    assert reason is not None and kind in reason


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111", "::ffff:8.8.8.8"])
def test_classifier_allows_public(address: str) -> None:
    assert blocked_reason(address) is None


def test_allow_private_never_opens_metadata() -> None:
    assert blocked_reason("10.0.0.1", allow_private=True) is None
    assert blocked_reason("127.0.0.1", allow_private=True) is None
    assert blocked_reason("169.254.169.254", allow_private=True) is not None
    assert blocked_reason("fd00:ec2::254", allow_private=True) is not None


# --------------------------------------------------------------------------- URL fetch


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # needed for chunked responses
    hosts_seen: list[str] = []

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        self.close_connection = True
        _Handler.hosts_seen.append(self.headers.get("Host", ""))
        routes: dict[str, Callable[[], None]] = {
            "/audio.bin": lambda: self._send(200, PAYLOAD),
            "/redirect-local": lambda: self._redirect("/audio.bin"),
            "/redirect-away": lambda: self._redirect("http://not-allowed.test/audio.bin"),
            "/redirect-metadata": lambda: self._redirect("http://meta.test/latest"),
            "/redirect-loop": lambda: self._redirect("/redirect-loop"),
            "/big": lambda: self._send(200, bytes(10_000)),
            "/big-chunked": lambda: self._chunked([bytes(1000)] * 10, pause_s=0),
            "/trickle": lambda: self._chunked([b"x"] * 1000, pause_s=0.05),
            "/stall": lambda: self._chunked([b"x"] * 12, pause_s=0.05, last_pause_s=10),
        }
        route = routes.get(self.path.split("?")[0], lambda: self._send(404, b"not found"))
        try:
            route()
        except OSError:  # the client gave up; that is what several tests want
            pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _redirect(self, location: str) -> None:
        self.send_response(302)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _chunked(self, chunks: list[bytes], *, pause_s: float, last_pause_s: float = 0) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for index, chunk in enumerate([*chunks, b""]):  # b"" is the terminating chunk
            pause = last_pause_s if index == len(chunks) else pause_s
            if index and STOP.wait(pause):
                return
            self.wfile.write(f"{len(chunk):X}\r\n".encode() + chunk + b"\r\n")


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        STOP.set()
        httpd.shutdown()
        httpd.server_close()


@dataclass
class FakeDNS:
    """Names answered with fixed addresses (after `delay_s`); others go to the real resolver."""

    answers: dict[str, list[str]] = field(default_factory=dict)
    lookups: list[str] = field(default_factory=list)
    delay_s: float = 0.0


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDNS:
    dns = FakeDNS()
    real = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host not in dns.answers:
            return real(host, port, *args, **kwargs)
        dns.lookups.append(host)
        time.sleep(dns.delay_s)
        return [
            (
                socket.AF_INET6 if ":" in ip else socket.AF_INET,
                socket.SOCK_STREAM,
                6,
                "",
                (ip, port),
            )
            for ip in dns.answers[host]
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return dns


@pytest.fixture
def no_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail instead of sending: for tests whose target must be refused before any connection."""

    def send(*args: Any, **kwargs: Any) -> httpx.Response:
        raise AssertionError("a refused target was contacted")

    monkeypatch.setattr(httpx.Client, "send", send)


def fetch(url: str, dest: Path, **overrides: Any) -> Path:
    options: dict[str, Any] = {
        "allowed_hosts": ["127.0.0.1"],
        "allow_private": True,
        "max_bytes": 1_000_000,
        "timeout_s": 5.0,
    }
    return fetch_audio_url(url, dest, **(options | overrides))


def test_fetch_refuses_loopback_by_default(server: str, tmp_path: Path) -> None:
    error = raises_code(
        ErrorCode.URL_NOT_ALLOWED,
        lambda: fetch(f"{server}/audio.bin", tmp_path / "a", allow_private=False),
    )
    # Which kind of address a name has is not told (README "Request limits"), the fix is.
    assert "loopback" not in error.message and "AUDIO_URL_ALLOW_PRIVATE" in error.message
    assert not (tmp_path / "a").exists()


def test_fetch_downloads_when_private_allowed(server: str, tmp_path: Path) -> None:
    spool = tmp_path / "spool"  # created on demand, like the service's SPOOL_DIR
    dest = fetch(f"{server}/audio.bin", spool / "a")
    assert dest.read_bytes() == PAYLOAD
    assert list(spool.iterdir()) == [dest]  # no temp file left behind


def test_fetch_connects_to_the_address_it_checked(
    server: str, tmp_path: Path, fake_dns: FakeDNS
) -> None:
    # audio.test exists only in the fake resolver: success proves httpx never resolved it.
    fake_dns.answers["audio.test"] = ["127.0.0.1"]
    port = server.rsplit(":", 1)[1]
    dest = fetch(
        f"http://audio.test:{port}/audio.bin", tmp_path / "a", allowed_hosts=["audio.test"]
    )
    assert dest.read_bytes() == PAYLOAD
    assert fake_dns.lookups == ["audio.test"]  # ours; httpx connected to the IP it was given
    assert _Handler.hosts_seen[-1] == f"audio.test:{port}"


def test_fetch_follows_allowed_redirects(server: str, tmp_path: Path) -> None:
    assert fetch(f"{server}/redirect-local", tmp_path / "a").read_bytes() == PAYLOAD


def test_fetch_refuses_redirect_to_disallowed_host(server: str, tmp_path: Path) -> None:
    error = raises_code(
        ErrorCode.URL_NOT_ALLOWED, lambda: fetch(f"{server}/redirect-away", tmp_path / "a")
    )
    assert "not-allowed.test" in error.message


def test_fetch_rechecks_addresses_after_redirect(
    server: str, tmp_path: Path, fake_dns: FakeDNS
) -> None:
    fake_dns.answers["meta.test"] = ["169.254.169.254"]
    error = raises_code(
        ErrorCode.URL_NOT_ALLOWED,
        lambda: fetch(
            f"{server}/redirect-metadata", tmp_path / "a", allowed_hosts=["127.0.0.1", "meta.test"]
        ),
    )
    assert "'meta.test'" in error.message
    # Metadata is never allowed, so the message does not point at the allow-private setting.
    assert "ALLOW_PRIVATE" not in error.message


def test_fetch_gives_up_on_redirect_loops(server: str, tmp_path: Path) -> None:
    raises_code(
        ErrorCode.URL_FETCH_FAILED, lambda: fetch(f"{server}/redirect-loop", tmp_path / "a")
    )


@pytest.mark.usefixtures("no_sending")
@pytest.mark.parametrize(
    ("answers", "allow_private"),
    [
        (["10.1.2.3"], False),
        (["8.8.8.8", "192.168.0.7"], False),  # one bad address is enough
        (["::ffff:10.0.0.1"], False),
        (["169.254.169.254"], True),
    ],
)
def test_fetch_refuses_internal_dns_answers(
    answers: list[str], allow_private: bool, tmp_path: Path, fake_dns: FakeDNS
) -> None:
    fake_dns.answers["intranet.test"] = answers
    raises_code(
        ErrorCode.URL_NOT_ALLOWED,
        lambda: fetch(
            "https://intranet.test/a.wav",
            tmp_path / "a",
            allowed_hosts=["intranet.test"],
            allow_private=allow_private,
        ),
    )


@pytest.mark.parametrize("path", ["/big", "/big-chunked"])
def test_fetch_caps_the_body(server: str, tmp_path: Path, path: str) -> None:
    raises_code(
        ErrorCode.AUDIO_TOO_LARGE, lambda: fetch(f"{server}{path}", tmp_path / "a", max_bytes=1000)
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("path", ["/trickle", "/stall"])
def test_fetch_deadline_is_total(server: str, tmp_path: Path, path: str) -> None:
    # /stall goes quiet 0.6 s in: a per-read timeout alone would only give up at about 1.6 s.
    started = time.monotonic()
    raises_code(
        ErrorCode.URL_FETCH_FAILED, lambda: fetch(f"{server}{path}", tmp_path / "a", timeout_s=1.0)
    )
    assert time.monotonic() - started < 1.4
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    """An HTTPS server on 127.0.0.1 whose certificate names only audio.test; yields port, CA."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    run(
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "1", "-subj", "/CN=audio.test", "-addext",
        "subjectAltName=DNS:audio.test", "-keyout", str(key), "-out", str(cert),
    )  # fmt: skip
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield httpd.server_address[1], cert
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_fetch_https_verifies_the_real_hostname(
    tls_server: tuple[int, Path], tmp_path: Path, fake_dns: FakeDNS, monkeypatch: pytest.MonkeyPatch
) -> None:
    port, ca = tls_server
    fake_dns.answers.update({"audio.test": ["127.0.0.1"], "other.test": ["127.0.0.1"]})
    trusted = ssl.create_default_context(cafile=str(ca))
    monkeypatch.setattr(
        audio_url, "new_client", lambda: httpx.Client(verify=trusted, trust_env=False)
    )
    options: dict[str, Any] = {"allowed_hosts": ["*"], "timeout_s": 5.0}
    # SNI and certificate checks use the name although the connection goes to the checked IP.
    dest = fetch(f"https://audio.test:{port}/audio.bin", tmp_path / "a", **options)
    assert dest.read_bytes() == PAYLOAD
    error = raises_code(
        ErrorCode.URL_FETCH_FAILED,
        lambda: fetch(f"https://other.test:{port}/audio.bin", tmp_path / "b", **options),
    )
    assert "certificate" in error.message


@pytest.mark.usefixtures("no_sending")
def test_fetch_deadline_covers_dns(tmp_path: Path, fake_dns: FakeDNS) -> None:
    fake_dns.answers["slow-dns.test"] = ["127.0.0.1"]
    fake_dns.delay_s = 0.5
    started = time.monotonic()
    raises_code(
        ErrorCode.URL_FETCH_FAILED,
        lambda: fetch("http://slow-dns.test/a", tmp_path / "a", allowed_hosts=["*"], timeout_s=0.1),
    )
    assert time.monotonic() - started < 0.4


def test_fetch_404_hides_credentials(server: str, tmp_path: Path) -> None:
    url = server.replace("http://", "http://user:hunter2@") + "/missing?sig=s3cr3t"
    error = raises_code(ErrorCode.URL_FETCH_FAILED, lambda: fetch(url, tmp_path / "a"))
    assert "404" in error.message
    assert "hunter2" not in error.message and "s3cr3t" not in error.message


# --------------------------------------------------------------------------- decoding


def write_wav(path: Path, samples: np.ndarray[Any, Any], rate: int = SAMPLE_RATE) -> Path:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((samples * 32767).astype("<i2").tobytes())
    return path


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    run("espeak-ng", "-w", str(path), "The quick brown fox jumps over the lazy dog.")
    return path


def wav_seconds(path: Path) -> float:
    with wave.open(str(path)) as wav:
        return float(wav.getnframes() / wav.getframerate())


@pytest.mark.needs("espeak-ng")
@pytest.mark.parametrize("suffix", [".mp3", ".ogg"])
def test_compressed_speech_decodes_to_the_right_length(
    speech_wav: Path, tmp_path: Path, suffix: str
) -> None:
    encoded = tmp_path / f"speech{suffix}"
    run("ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(speech_wav), str(encoded))
    samples = load_audio(encoded, max_seconds=60)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert len(samples) / SAMPLE_RATE == pytest.approx(wav_seconds(speech_wav), abs=0.1)
    assert 0.05 < float(np.abs(samples).max()) <= 1.0


def test_stereo_44k_becomes_16k_mono(tmp_path: Path) -> None:
    path = tmp_path / "stereo.wav"
    run("sox", "-n", "-r", "44100", "-c", "2", str(path), "synth", "2", "sine", "440")
    samples = load_audio(path, max_seconds=10)
    assert len(samples) == 2 * SAMPLE_RATE
    assert probe_duration_s(path) == pytest.approx(2.0, abs=0.01)


def test_too_long_is_refused_without_decoding_everything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tone.wav"
    run("sox", "-n", "-r", "16000", "-c", "1", str(path), "synth", "3", "sine", "440")
    commands: list[list[str]] = []
    real_run = subprocess.run

    def spy(command: list[str], **kwargs: Any) -> Any:
        commands.append(command)
        return real_run(command, **kwargs)

    monkeypatch.setattr(subprocess, "run", spy)
    raises_code(ErrorCode.AUDIO_TOO_LONG, lambda: load_audio(path, max_seconds=1))
    ffmpeg = next(command for command in commands if command[0] == "ffmpeg")  # after ffprobe
    assert ffmpeg[ffmpeg.index("-t") + 1] == "2.000"


def test_text_file_is_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("these are not the samples you are looking for\n" * 20)
    error = raises_code(ErrorCode.UNSUPPORTED_AUDIO, lambda: load_audio(path, max_seconds=60))
    assert str(tmp_path) not in error.message
    assert "Invalid data" in error.message
    assert probe_duration_s(path) is None


def test_zero_byte_file_is_empty_without_ffmpeg(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "empty.wav"
    path.touch()

    def no_ffmpeg(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("ffmpeg ran on an empty file")

    monkeypatch.setattr(subprocess, "run", no_ffmpeg)
    raises_code(ErrorCode.EMPTY_AUDIO, lambda: load_audio(path, max_seconds=60))


@pytest.mark.parametrize("seconds", [0.0, 0.05])
def test_no_or_almost_no_samples_is_empty(tmp_path: Path, seconds: float) -> None:
    silence = np.zeros(math.floor(seconds * SAMPLE_RATE))
    path = write_wav(tmp_path / "short.wav", silence)
    raises_code(ErrorCode.EMPTY_AUDIO, lambda: load_audio(path, max_seconds=60))


def test_wav_round_trip_keeps_samples(tmp_path: Path) -> None:
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(SAMPLE_RATE) / SAMPLE_RATE)
    samples = load_audio(write_wav(tmp_path / "tone.wav", tone), max_seconds=1)
    np.testing.assert_allclose(samples, tone, atol=1e-4)


# --------------------------------------------------------------------------- spool


def test_spool_file_is_written_whole(tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    path = write_spool_file(PAYLOAD, spool, "event-1.audio")
    assert path == spool / "event-1.audio"
    assert path.read_bytes() == PAYLOAD
    assert list(spool.iterdir()) == [path]


@pytest.mark.parametrize("name", ["", "..", "../escape", "a/b"])
def test_spool_file_name_must_be_plain(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError):
        write_spool_file(b"x", tmp_path, name)


def test_a_decoder_stopped_by_a_signal_is_an_interruption_not_bad_audio(tmp_path: Path) -> None:
    """A shutdown that signals the whole process group stops ffmpeg too; that must put the
    event back in the queue (Interrupted), never fail it as unsupported_audio."""
    from skyhigh.domain.errors import Interrupted
    from skyhigh.speech.decode import _run

    target = tmp_path / "input"
    target.write_bytes(b"")
    with pytest.raises(Interrupted, match="signal 15"):
        _run(["sh", "-c", "kill -TERM $$"], target, timeout_s=5)
