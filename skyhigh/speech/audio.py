"""Audio sources: URL (SSRF-guarded) fetch and file decoding into 16 kHz mono float32.

Everything here is synchronous and blocking (subprocesses, sockets, disk): call it from a worker
thread. Every client-visible failure is a `StepFailed` carrying an `ErrorCode`:

    check_audio_url       url_not_allowed
    fetch_audio_url       url_not_allowed, url_fetch_failed, audio_too_large
    load_audio            empty_audio, unsupported_audio, audio_too_long
"""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import numpy.typing as npt

from skyhigh.domain.events import ErrorCode, StepFailed
from skyhigh.durable_files import atomic_writer

SAMPLE_RATE = 16_000
MIN_AUDIO_SECONDS = 0.1
MAX_REDIRECTS = 5

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Credentials for the whole instance live here; no setting may open it (see blocked_reason).
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
# NAT64 maps an IPv4 address into IPv6; Python 3.11 does not classify the embedded address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# getaddrinfo cannot be interrupted; running it here lets a fetch give up on a slow resolver.
_RESOLVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="skyhigh-dns")

FloatArray = npt.NDArray[np.float32]


# --------------------------------------------------------------------------- URL policy


def check_audio_url(url: str, *, allowed_hosts: Sequence[str]) -> None:
    """Cheap intake-time check (no DNS): http(s), a host, and that host on the allow-list.

    `allowed_hosts` entries are exact hosts, `*.example.com` (any subdomain, not the apex) or
    `*` (any host). An empty list means URL intake is off. Raises url_not_allowed.
    """
    _parse_allowed_url(url, allowed_hosts)


def _parse_allowed_url(url: str | httpx.URL, allowed_hosts: Sequence[str]) -> httpx.URL:
    if not allowed_hosts:
        raise StepFailed(
            ErrorCode.URL_NOT_ALLOWED,
            "audio URLs are disabled on this server: set AUDIO_URL_ALLOWED_HOSTS to enable them",
        )
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        # The text may hold credentials, so it is not echoed back.
        raise StepFailed(ErrorCode.URL_NOT_ALLOWED, "audio_url is not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        raise StepFailed(ErrorCode.URL_NOT_ALLOWED, "audio_url must use http or https")
    if not parsed.host:
        raise StepFailed(ErrorCode.URL_NOT_ALLOWED, "audio_url has no host")
    if not host_allowed(parsed, allowed_hosts):
        raise StepFailed(
            ErrorCode.URL_NOT_ALLOWED,
            f"host {parsed.host!r} is not in AUDIO_URL_ALLOWED_HOSTS ({', '.join(allowed_hosts)})",
        )
    return parsed


def host_allowed(url: httpx.URL, allowed_hosts: Sequence[str]) -> bool:
    """Whether the URL's host matches an allow-list entry (case and trailing dot ignored)."""
    # Admins may write an IDN in either form, so both are compared.
    names = {_normalize_host(url.host), _normalize_host(url.raw_host.decode("ascii"))}
    for entry in allowed_hosts:
        pattern = _normalize_host(entry)
        if pattern == "*" or pattern in names:
            return True
        if pattern.startswith("*.") and any(name.endswith(pattern[1:]) for name in names):
            return True
    return False


def _normalize_host(host: str) -> str:
    host = host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")
    try:
        return str(ipaddress.ip_address(host))  # one spelling per IPv6 address
    except ValueError:
        return host


def blocked_reason(address: str | IPAddress, *, allow_private: bool = False) -> str | None:
    """Why fetching from `address` is refused, or None when it may be contacted.

    The cloud metadata address is refused even with `allow_private`: reaching an intranet host
    is a deployment choice, handing out the instance's credentials never is.
    """
    ip = _embedded_ipv4(ipaddress.ip_address(address))
    if ip in METADATA_ADDRESSES:
        return "the cloud metadata service"
    if allow_private:
        return None
    return _private_kind(ip)


def _embedded_ipv4(ip: IPAddress) -> IPAddress:
    """The IPv4 address a mapped, 6to4 or NAT64 IPv6 address really reaches."""
    if isinstance(ip, ipaddress.IPv4Address):
        return ip
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return ip


def _private_kind(ip: IPAddress) -> str | None:
    checks = (
        ("unspecified", ip.is_unspecified),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        # Catches what the flags above miss: shared/CGNAT space, documentation ranges, ...
        ("non-global", not ip.is_global),
    )
    return next((f"a {kind} address ({ip})" for kind, hit in checks if hit), None)


# --------------------------------------------------------------------------- URL fetch


def fetch_audio_url(
    url: str,
    dest: Path,
    *,
    allowed_hosts: Sequence[str],
    allow_private: bool,
    max_bytes: int,
    timeout_s: float,
) -> Path:
    """Download `url` to `dest`, refusing internal addresses; returns `dest`.

    Each hop (redirects are followed by hand, at most MAX_REDIRECTS) is checked against the
    allow-list, resolved once, every resolved address classified, and the connection made to a
    checked address, so a DNS answer cannot change between check and use. `timeout_s` bounds the
    whole fetch. Raises url_not_allowed, url_fetch_failed or audio_too_large.
    """
    target = _parse_allowed_url(url, allowed_hosts)
    with _Deadline(timeout_s) as deadline, _client() as client:
        for _ in range(MAX_REDIRECTS + 1):
            addresses = _resolve_checked(target, allow_private=allow_private, deadline=deadline)
            with _open_pinned(client, target, addresses, deadline) as response:
                location = _redirect_location(response, target)
                if location is None:
                    _raise_for_status(response, target)
                    _check_declared_length(response, max_bytes)
                    return _stream_to_file(response, dest, max_bytes=max_bytes, deadline=deadline)
            target = _parse_allowed_url(location, allowed_hosts)
    raise StepFailed(
        ErrorCode.URL_FETCH_FAILED, f"more than {MAX_REDIRECTS} redirects from {_redact(url)}"
    )


def _client() -> httpx.Client:
    # trust_env=False: an HTTP(S)_PROXY from the environment would resolve the name itself and
    # bypass the address checks; cookies and netrc credentials have no business here either.
    return httpx.Client(trust_env=False, follow_redirects=False)


def _resolve_checked(
    url: httpx.URL, *, allow_private: bool, deadline: _Deadline
) -> list[IPAddress]:
    host = url.raw_host.decode("ascii")
    addresses = _resolve(host, _port(url), timeout_s=deadline.remaining())
    for address in addresses:
        reason = blocked_reason(address, allow_private=allow_private)
        if reason is not None:
            raise StepFailed(ErrorCode.URL_NOT_ALLOWED, _refusal(url, address, reason))
    return addresses


def _refusal(url: httpx.URL, address: IPAddress, reason: str) -> str:
    message = f"{url.host!r} resolves to {reason}; refused"
    if _embedded_ipv4(address) not in METADATA_ADDRESSES:
        message += " (AUDIO_URL_ALLOW_PRIVATE=true allows internal hosts)"
    return message


def _resolve(host: str, port: int, *, timeout_s: float) -> list[IPAddress]:
    future = _RESOLVER.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout_s)
    except TimeoutError:
        raise StepFailed(ErrorCode.URL_FETCH_FAILED, f"DNS lookup of {host!r} timed out") from None
    except OSError as exc:
        raise StepFailed(
            ErrorCode.URL_FETCH_FAILED, f"cannot resolve {host!r}: {exc.strerror or exc}"
        ) from None
    # sockaddr[0] may carry an IPv6 scope ("fe80::1%eth0"); the classifier needs the address.
    unique = dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
    if not unique:
        raise StepFailed(ErrorCode.URL_FETCH_FAILED, f"{host!r} has no addresses")
    return list(unique)


def _port(url: httpx.URL) -> int:
    return url.port or (443 if url.scheme == "https" else 80)


@contextmanager
def _open_pinned(
    client: httpx.Client, url: httpx.URL, addresses: Sequence[IPAddress], deadline: _Deadline
) -> Iterator[httpx.Response]:
    """Send GET to the first checked address that accepts a connection (dual-stack fallback)."""
    failure: Exception | None = None
    for address in addresses:
        request = _pinned_request(client, url, address, deadline)
        try:
            response = client.send(request, stream=True)
        except httpx.ConnectError as exc:
            failure = exc
            continue
        except httpx.HTTPError as exc:
            raise _network_failure(url, exc, deadline) from None
        try:
            yield response
        except httpx.HTTPError as exc:
            raise _network_failure(url, exc, deadline) from None
        finally:
            response.close()
        return
    raise StepFailed(ErrorCode.URL_FETCH_FAILED, f"cannot connect to {_redact(url)}: {failure}")


def _pinned_request(
    client: httpx.Client, url: httpx.URL, address: IPAddress, deadline: _Deadline
) -> httpx.Request:
    # The URL carries the checked IP, so httpx never resolves the name again; Host and SNI keep
    # the real name so virtual hosting and certificate verification still work.
    extensions: dict[str, Any] = {"trace": deadline.trace}
    if url.scheme == "https":
        extensions["sni_hostname"] = url.raw_host.decode("ascii")
    return client.build_request(
        "GET",
        url.copy_with(host=str(address)),
        headers={"Host": url.netloc.decode("ascii"), "Accept-Encoding": "identity"},
        timeout=httpx.Timeout(deadline.remaining()),
        extensions=extensions,
    )


def _network_failure(url: httpx.URL, exc: httpx.HTTPError, deadline: _Deadline) -> StepFailed:
    if deadline.expired or isinstance(exc, httpx.TimeoutException):
        return StepFailed(
            ErrorCode.URL_FETCH_FAILED,
            f"{_redact(url)} did not finish within {deadline.seconds:g} s (AUDIO_URL_TIMEOUT_S)",
        )
    return StepFailed(
        ErrorCode.URL_FETCH_FAILED, f"fetching {_redact(url)} failed: {type(exc).__name__}"
    )


def _redirect_location(response: httpx.Response, url: httpx.URL) -> httpx.URL | None:
    if response.status_code not in _REDIRECT_STATUSES:
        return None
    location = response.headers.get("location")
    if not location:
        raise StepFailed(
            ErrorCode.URL_FETCH_FAILED,
            f"{_redact(url)} answered {response.status_code} without a Location header",
        )
    try:
        return url.join(location)
    except httpx.InvalidURL:
        raise StepFailed(
            ErrorCode.URL_FETCH_FAILED, f"{_redact(url)} redirected to an invalid URL"
        ) from None


def _raise_for_status(response: httpx.Response, url: httpx.URL) -> None:
    if not response.is_success:
        raise StepFailed(
            ErrorCode.URL_FETCH_FAILED,
            f"{_redact(url)} answered {response.status_code} {response.reason_phrase}",
        )


def _check_declared_length(response: httpx.Response, max_bytes: int) -> None:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(max_bytes)


def _stream_to_file(
    response: httpx.Response, dest: Path, *, max_bytes: int, deadline: _Deadline
) -> Path:
    # Content-Length may be absent or lie, so the cap is enforced on the bytes actually read.
    # No chunk_size: httpx would buffer up to it before the cap and the deadline get a look.
    with atomic_writer(dest) as out:
        received = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received > max_bytes:
                raise _too_large(max_bytes)
            deadline.remaining()
            out.write(chunk)
        # A watchdog shutdown looks like a clean end of a close-delimited body.
        deadline.remaining()
    return dest


def _too_large(max_bytes: int) -> StepFailed:
    return StepFailed(
        ErrorCode.AUDIO_TOO_LARGE,
        f"the audio at audio_url is larger than {max_bytes} bytes (MAX_AUDIO_BYTES)",
    )


def _redact(url: str | httpx.URL) -> str:
    """The URL without userinfo, query or fragment: those may carry credentials or signatures."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "audio_url"
    return str(parsed.copy_with(username=None, password=None, query=None, fragment=None))


class _Deadline:
    """The total time budget of one fetch.

    httpx timeouts apply to each operation, so a server that stalls mid-body could hold a worker
    for many multiples of the budget. A timer shuts down the open socket when the budget runs
    out, which wakes the blocked read; `remaining()` raises once it is spent.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.expired = False
        self._end = time.monotonic() + seconds
        self._lock = threading.Lock()
        self._socket: socket.socket | None = None
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        with self._lock:
            self._socket = None

    def remaining(self) -> float:
        left = self._end - time.monotonic()
        if left <= 0 or self.expired:
            raise StepFailed(
                ErrorCode.URL_FETCH_FAILED,
                f"audio_url did not finish within {self.seconds:g} s (AUDIO_URL_TIMEOUT_S)",
            )
        return left

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore `trace` hook: remember the socket of each new (or TLS-wrapped) connection."""
        if event in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            sock = info["return_value"].get_extra_info("socket")
            with self._lock:
                self._socket = sock

    def _expire(self) -> None:
        with self._lock:
            self.expired = True
            if self._socket is None:
                return
            try:
                # The base-class call skips SSLSocket.shutdown, which would tear down TLS state
                # under the reading thread instead of just waking it.
                socket.socket.shutdown(self._socket, socket.SHUT_RDWR)
            except OSError:
                pass  # already closed


# --------------------------------------------------------------------------- decoding


def probe_duration_s(path: Path) -> float | None:
    """The container's declared duration in seconds, or None when ffprobe cannot tell."""
    # fmt: off
    command = [
        "ffprobe", "-v", "error", "-show_entries", "format=duration",
        "-of", "default=noprint_wrappers=1:nokey=1", str(path),
    ]
    # fmt: on
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    try:
        return float(result.stdout.strip())
    except ValueError:  # "N/A" or nothing
        return None


def load_audio(path: Path, *, max_seconds: float) -> FloatArray:
    """Decode anything ffmpeg reads into 16 kHz mono float32 in [-1, 1].

    Decoding stops just past `max_seconds`, so an overlong file costs at most that much memory.
    Raises empty_audio, unsupported_audio or audio_too_long.
    """
    if path.stat().st_size == 0:
        raise StepFailed(ErrorCode.EMPTY_AUDIO, "the audio file is empty (0 bytes)")
    pcm = _run_ffmpeg(path, limit_s=max_seconds + 1)
    samples = np.frombuffer(pcm, np.int16).astype(np.float32) / 32768.0
    if len(samples) < MIN_AUDIO_SECONDS * SAMPLE_RATE:
        raise StepFailed(
            ErrorCode.EMPTY_AUDIO,
            f"the audio holds {len(samples) / SAMPLE_RATE:.3f} s of sound; "
            f"at least {MIN_AUDIO_SECONDS} s is needed",
        )
    if len(samples) > max_seconds * SAMPLE_RATE:
        raise StepFailed(
            ErrorCode.AUDIO_TOO_LONG,
            f"the audio is longer than {max_seconds:g} s (MAX_AUDIO_SECONDS): split it",
        )
    return samples


def _run_ffmpeg(path: Path, *, limit_s: float) -> bytes:
    # fmt: off
    command = [
        "ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-threads", "0",
        "-i", str(path),
        "-t", f"{limit_s:.3f}",  # stop decoding just past the limit
        "-vn", "-f", "s16le", "-ac", "1", "-acodec", "pcm_s16le", "-ar", str(SAMPLE_RATE), "-",
    ]
    # fmt: on
    try:
        result = subprocess.run(command, capture_output=True, check=False)
    except FileNotFoundError:
        raise RuntimeError("ffmpeg is not installed or not on PATH") from None
    if result.returncode != 0:
        raise StepFailed(
            ErrorCode.UNSUPPORTED_AUDIO,
            f"could not decode the audio: {_last_line(result.stderr, path)}",
        )
    return result.stdout


def _last_line(stderr: bytes, path: Path) -> str:
    lines = stderr.decode("utf-8", "replace").strip().splitlines()
    # The spool path is server-internal; the client only needs the reason.
    return lines[-1].replace(str(path), "input") if lines else "ffmpeg failed without a message"
