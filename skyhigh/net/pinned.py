"""Requests sent to the address that was checked, not to whatever the name resolves to later.

The request URL carries the checked IP, so httpx never resolves the name again (DNS
rebinding); the Host header and TLS SNI keep the real name, so virtual hosting and certificate
verification still work. Redirects are never followed here: a caller that follows them must
check and resolve every hop itself (see `skyhigh.speech.audio_url`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from skyhigh.net.errors import TargetUnreachable
from skyhigh.net.policy import IPAddress, parse_target
from skyhigh.net.resolve import resolve_checked

# httpcore's `trace` extension: called with an event name and its details.
TraceHook = Callable[[str, dict[str, Any]], None]


def new_client() -> httpx.Client:
    """The client for every request to a client-chosen URL."""
    # trust_env=False: an HTTP(S)_PROXY from the environment would resolve the name itself and
    # bypass the address checks; cookies and netrc credentials have no business here either.
    return httpx.Client(trust_env=False, follow_redirects=False)


@contextmanager
def open_pinned(
    client: httpx.Client,
    method: str,
    url: httpx.URL,
    addresses: Sequence[IPAddress],
    *,
    headers: Mapping[str, str],
    time_left: Callable[[], float],
    content: bytes | None = None,
    trace: TraceHook | None = None,
) -> Iterator[httpx.Response]:
    """Send to the first of the checked `addresses` that accepts a connection; yield the
    streamed response, closed on exit.

    Trying the next address on a refused connection is the dual-stack fallback httpx would do
    itself had it resolved the name. `time_left()` is each attempt's httpx timeout (httpx
    applies it per operation) and may raise to give up. Raises the last httpx.ConnectError
    when no address accepts; other httpx errors propagate.
    """
    failure: httpx.ConnectError | None = None
    for address in addresses:
        extensions: dict[str, Any] = {}
        if trace is not None:
            extensions["trace"] = trace
        if url.scheme == "https":
            extensions["sni_hostname"] = url.raw_host.decode("ascii")
        request = client.build_request(
            method,
            url.copy_with(host=str(address)),
            content=content,
            headers={**headers, "Host": url.netloc.decode("ascii")},
            timeout=httpx.Timeout(time_left()),
            extensions=extensions,
        )
        try:
            response = client.send(request, stream=True)
        except httpx.ConnectError as exc:
            failure = exc
            continue
        try:
            yield response
        finally:
            response.close()
        return
    raise failure or httpx.ConnectError("no address to connect to")


@dataclass(frozen=True)
class Answer:
    status_code: int
    retry_after: str | None


def post_pinned(
    client: httpx.Client,
    url: str,
    *,
    content: bytes,
    headers: Mapping[str, str],
    allow_private: bool,
    timeout_s: float,
) -> Answer:
    """POST `content` to `url` through a checked address; only the status line is read.

    `timeout_s` bounds the DNS lookup and each network operation. Raises TargetRefused
    (policy) or TargetUnreachable (DNS, connection, timeout).
    """
    target = parse_target(url)
    addresses = resolve_checked(target, allow_private=allow_private, timeout_s=timeout_s)
    try:
        with open_pinned(
            client,
            "POST",
            target,
            addresses,
            headers=headers,
            content=content,
            time_left=lambda: timeout_s,
        ) as response:
            # The body is never read: a receiver cannot make us download anything.
            return Answer(response.status_code, response.headers.get("retry-after"))
    except httpx.ConnectError as exc:
        raise TargetUnreachable(f"cannot connect: {type(exc).__name__}") from None
    except httpx.TimeoutException:
        raise TargetUnreachable(f"no answer within {timeout_s:g} s") from None
    except httpx.HTTPError as exc:
        raise TargetUnreachable(f"request failed: {type(exc).__name__}") from None
