"""Which URLs and addresses a request to a client-chosen URL may reach (the SSRF policy).

Loopback, private, link-local and other non-global addresses are refused unless the caller's
setting allows them (`AUDIO_URL_ALLOW_PRIVATE`, `WEBHOOK_ALLOW_PRIVATE`); the cloud metadata
address is refused always. The checks here look at addresses only: `skyhigh.net.resolve`
applies them to every DNS answer and `skyhigh.net.pinned` connects to exactly the address
that was checked, so a DNS answer cannot change between the check and the connection (DNS
rebinding). IPv6 forms that carry an IPv4 address (mapped, 6to4, NAT64) are judged by the
IPv4 address they really reach.
"""

from __future__ import annotations

import ipaddress

import httpx

from skyhigh.net.errors import TargetRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Credentials for the whole instance live here; no setting may open it (see blocked_reason).
METADATA_ADDRESSES = frozenset(
    {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}
)
# NAT64 maps an IPv4 address into IPv6; Python 3.11 does not classify the embedded address.
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def parse_target(url: str | httpx.URL, *, name: str = "the URL") -> httpx.URL:
    """An http(s) URL with a host, or TargetRefused; `name` is what messages call the URL."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        # The text may hold credentials, so it is not echoed back.
        raise TargetRefused(f"{name} is not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        raise TargetRefused(f"{name} must use http or https")
    if not parsed.host:
        raise TargetRefused(f"{name} has no host")
    return parsed


def blocked_reason(address: str | IPAddress, *, allow_private: bool = False) -> str | None:
    """Why contacting `address` is refused, or None when it may be contacted.

    The cloud metadata address is refused even with `allow_private`: reaching an intranet host
    is a deployment choice, handing out the instance's credentials never is.
    """
    ip = _embedded_ipv4(ipaddress.ip_address(address))
    if ip in METADATA_ADDRESSES:
        return "the cloud metadata service"
    if allow_private:
        return None
    return _private_kind(ip)


def refused(message: str, address: IPAddress) -> TargetRefused:
    """TargetRefused for a blocked `address`, noting whether allow-private would open it."""
    return TargetRefused(
        message, allow_private_helps=_embedded_ipv4(address) not in METADATA_ADDRESSES
    )


def check_literal_host(url: str | httpx.URL, *, allow_private: bool) -> httpx.URL:
    """Intake-time check without DNS: `parse_target`, and a host written as an IP address must
    be allowed. Returns the parsed URL; raises TargetRefused."""
    parsed = parse_target(url)
    try:
        address = ipaddress.ip_address(parsed.host)
    except ValueError:
        return parsed  # a name: checked when resolved, just before connecting
    reason = blocked_reason(address, allow_private=allow_private)
    if reason is not None:
        raise refused(f"the URL points at {reason}", address)
    return parsed


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
