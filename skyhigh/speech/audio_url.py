"""`audio_url`: the intake check and the download, on the SSRF guard of `skyhigh.net`.

Intake only checks the URL against AUDIO_URL_ALLOWED_HOSTS (no DNS, so a 202 stays quick); the
worker downloads it, checking every redirect hop against the list and every resolved address
against the address policy, and connecting to the address it checked. Everything here blocks
(sockets, disk): call it from a worker thread. Every client-visible failure is a `StepFailed`:

    check_audio_url       url_not_allowed
    fetch_audio_url       url_not_allowed, url_fetch_failed, audio_too_large
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from skyhigh.domain.events import ErrorCode, StepFailed
from skyhigh.durable_files import atomic_writer
from skyhigh.net.allowlist import host_allowed
from skyhigh.net.errors import TargetRefused, TargetUnreachable
from skyhigh.net.pinned import new_client, open_pinned
from skyhigh.net.policy import IPAddress, parse_target
from skyhigh.net.redact import redact_url
from skyhigh.net.resolve import resolve_checked

MAX_REDIRECTS = 5
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


def check_audio_url(url: str, *, allowed_hosts: Sequence[str]) -> None:
    """Cheap intake-time check (no DNS): http(s), a host, and that host on the allow-list.

    `allowed_hosts` entries are exact hosts, `*.example.com` (any subdomain, not the apex) or
    `*` (any host). An empty list means URL intake is off. Raises url_not_allowed.
    """
    _allowed_target(url, allowed_hosts)


def _allowed_target(url: str | httpx.URL, allowed_hosts: Sequence[str]) -> httpx.URL:
    if not allowed_hosts:
        raise StepFailed(
            ErrorCode.URL_NOT_ALLOWED,
            "audio URLs are disabled on this server: set AUDIO_URL_ALLOWED_HOSTS to enable them",
        )
    try:
        parsed = parse_target(url, name="audio_url")
    except TargetRefused as exc:
        raise StepFailed(ErrorCode.URL_NOT_ALLOWED, str(exc)) from None
    if not host_allowed(parsed, allowed_hosts):
        raise StepFailed(
            ErrorCode.URL_NOT_ALLOWED,
            f"host {parsed.host!r} is not in AUDIO_URL_ALLOWED_HOSTS ({', '.join(allowed_hosts)})",
        )
    return parsed


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
    allow-list, resolved once, every resolved address checked, and the connection made to a
    checked address, so a DNS answer cannot change between check and use. `timeout_s` bounds the
    whole fetch. Raises url_not_allowed, url_fetch_failed or audio_too_large.
    """
    target = _allowed_target(url, allowed_hosts)
    with _Deadline(timeout_s) as deadline, new_client() as client:
        for _ in range(MAX_REDIRECTS + 1):
            addresses = _resolve(target, allow_private=allow_private, deadline=deadline)
            with _get(client, target, addresses, deadline) as response:
                location = _redirect_location(response, target)
                if location is None:
                    _raise_for_status(response, target)
                    _check_declared_length(response, max_bytes)
                    return _stream_to_file(response, dest, max_bytes=max_bytes, deadline=deadline)
            target = _allowed_target(location, allowed_hosts)
    raise StepFailed(
        ErrorCode.URL_FETCH_FAILED, f"more than {MAX_REDIRECTS} redirects from {redact_url(url)}"
    )


def _resolve(url: httpx.URL, *, allow_private: bool, deadline: _Deadline) -> list[IPAddress]:
    try:
        return resolve_checked(url, allow_private=allow_private, timeout_s=deadline.remaining())
    except TargetRefused as exc:
        hint = " (AUDIO_URL_ALLOW_PRIVATE=true allows internal hosts)"
        message = f"{exc}; refused{hint if exc.allow_private_helps else ''}"
        raise StepFailed(ErrorCode.URL_NOT_ALLOWED, message) from None
    except TargetUnreachable as exc:
        raise StepFailed(ErrorCode.URL_FETCH_FAILED, str(exc)) from None


@contextmanager
def _get(
    client: httpx.Client, url: httpx.URL, addresses: Sequence[IPAddress], deadline: _Deadline
) -> Iterator[httpx.Response]:
    """GET through a checked address; network failures (also mid-body) become url_fetch_failed."""
    try:
        with open_pinned(
            client,
            "GET",
            url,
            addresses,
            # The file as served: httpx would inflate a compressed body before the size cap sees it.
            headers={"Accept-Encoding": "identity"},
            time_left=deadline.remaining,
            trace=deadline.trace,
        ) as response:
            yield response
    except httpx.ConnectError as exc:
        raise StepFailed(
            ErrorCode.URL_FETCH_FAILED, f"cannot connect to {redact_url(url)}: {exc}"
        ) from None
    except httpx.HTTPError as exc:
        raise _network_failure(url, exc, deadline) from None


def _network_failure(url: httpx.URL, exc: httpx.HTTPError, deadline: _Deadline) -> StepFailed:
    if deadline.expired or isinstance(exc, httpx.TimeoutException):
        return StepFailed(
            ErrorCode.URL_FETCH_FAILED,
            f"{redact_url(url)} did not finish within {deadline.seconds:g} s (AUDIO_URL_TIMEOUT_S)",
        )
    return StepFailed(
        ErrorCode.URL_FETCH_FAILED, f"fetching {redact_url(url)} failed: {type(exc).__name__}"
    )


def _redirect_location(response: httpx.Response, url: httpx.URL) -> httpx.URL | None:
    if response.status_code not in _REDIRECT_STATUSES:
        return None
    location = response.headers.get("location")
    if not location:
        raise StepFailed(
            ErrorCode.URL_FETCH_FAILED,
            f"{redact_url(url)} answered {response.status_code} without a Location header",
        )
    try:
        return url.join(location)
    except httpx.InvalidURL:
        raise StepFailed(
            ErrorCode.URL_FETCH_FAILED, f"{redact_url(url)} redirected to an invalid URL"
        ) from None


def _raise_for_status(response: httpx.Response, url: httpx.URL) -> None:
    if not response.is_success:
        raise StepFailed(
            ErrorCode.URL_FETCH_FAILED,
            f"{redact_url(url)} answered {response.status_code} {response.reason_phrase}",
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
