"""Outbound requests to URLs a client chose, with the SSRF guard of `audio_url`.

The address policy is `skyhigh.speech.audio.blocked_reason` (loopback, private, link-local...
refused unless explicitly allowed; the cloud metadata address always). As in `fetch_audio_url`,
the host is resolved once, every answer is checked, and the connection goes to a checked
address, so a DNS answer cannot change between the check and the connection (DNS rebinding).
Redirects are not followed: a webhook receiver answers, it does not send us elsewhere.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from skyhigh.speech.audio import IPAddress, blocked_reason

# getaddrinfo cannot be interrupted; running it here lets a request give up on a slow resolver.
_RESOLVER = ThreadPoolExecutor(max_workers=2, thread_name_prefix="skyhigh-ssrf-dns")


class TargetRefused(Exception):
    """The URL or an address it resolves to is not allowed; retrying will not help."""


class TargetUnreachable(Exception):
    """DNS or the network failed; a later attempt may succeed."""


@dataclass(frozen=True)
class Answer:
    status_code: int
    retry_after: str | None


def parse_target(url: str) -> httpx.URL:
    """An http(s) URL with a host, or TargetRefused (the message never repeats the URL)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise TargetRefused("not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        raise TargetRefused("the URL must use http or https")
    if not parsed.host:
        raise TargetRefused("the URL has no host")
    return parsed


def check_literal_host(url: httpx.URL, *, allow_private: bool) -> None:
    """Intake-time check without DNS: a host written as an IP address must be allowed."""
    try:
        address = ipaddress.ip_address(url.host)
    except ValueError:
        return  # a name: checked when resolved, just before connecting
    reason = blocked_reason(address, allow_private=allow_private)
    if reason is not None:
        raise TargetRefused(f"the URL points at {reason}")


def resolve_checked(url: httpx.URL, *, allow_private: bool, timeout_s: float) -> list[IPAddress]:
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    future = _RESOLVER.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout_s)
    except TimeoutError:
        raise TargetUnreachable(f"DNS lookup of {host!r} timed out") from None
    except OSError as exc:
        raise TargetUnreachable(f"cannot resolve {host!r}: {exc.strerror or exc}") from None
    addresses = list(
        dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
    )
    if not addresses:
        raise TargetUnreachable(f"{host!r} has no addresses")
    for address in addresses:
        reason = blocked_reason(address, allow_private=allow_private)
        if reason is not None:
            raise TargetRefused(f"{url.host!r} resolves to {reason}")
    return addresses


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

    Raises TargetRefused (policy) or TargetUnreachable (DNS, connection, timeout).
    """
    target = parse_target(url)
    addresses = resolve_checked(target, allow_private=allow_private, timeout_s=timeout_s)
    failure: Exception | None = None
    for address in addresses:  # dual-stack fallback, as in fetch_audio_url
        extensions: dict[str, Any] = {}
        if target.scheme == "https":
            extensions["sni_hostname"] = target.raw_host.decode("ascii")
        request = client.build_request(
            "POST",
            target.copy_with(host=str(address)),
            content=content,
            # Host keeps the real name, so virtual hosting and TLS verification still work.
            headers={**headers, "Host": target.netloc.decode("ascii")},
            timeout=httpx.Timeout(timeout_s),
            extensions=extensions,
        )
        try:
            response = client.send(request, stream=True)
        except httpx.ConnectError as exc:
            failure = exc
            continue
        except httpx.TimeoutException:
            raise TargetUnreachable(f"no answer within {timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise TargetUnreachable(f"request failed: {type(exc).__name__}") from None
        # The body is never read: a receiver cannot make us download anything.
        response.close()
        return Answer(response.status_code, response.headers.get("retry-after"))
    raise TargetUnreachable(f"cannot connect: {type(failure).__name__}")


def new_client() -> httpx.Client:
    # trust_env=False: a proxy from the environment would resolve the name itself and bypass
    # the address check. Redirects stay unfollowed (see the module docstring).
    return httpx.Client(trust_env=False, follow_redirects=False)
