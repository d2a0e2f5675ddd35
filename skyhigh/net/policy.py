"""Which URLs and addresses a request to a client-chosen URL may reach (the SSRF policy).

Only globally routable addresses (`ipaddress` `is_global`, not multicast) are contacted, minus
ALWAYS_REFUSED: cloud metadata and credential services and ranges Python 3.11 still calls
global (192.0.0.0/24 holds Oracle Cloud's metadata service, fec0::/10 is deprecated
site-local). The caller's allow-private setting (`AUDIO_URL_ALLOW_PRIVATE`,
`WEBHOOK_ALLOW_PRIVATE`) opens exactly the intranet: RFC 1918, IPv6 unique-local and
loopback (PRIVATE_ALLOWED). Never link-local, shared/CGNAT (100.64.0.0/10, where Alibaba
Cloud's metadata lives), multicast, reserved or unspecified addresses, and never
ALWAYS_REFUSED, whatever the settings. The checks here look at addresses only: `skyhigh.net.resolve`
applies them to every DNS answer and `skyhigh.net.pinned` connects to exactly the address
that was checked, so a DNS answer cannot change between the check and the connection (DNS
rebinding). IPv6 forms that carry an IPv4 address are judged by the IPv4 address they really
reach: IPv4-compatible `::/96`, mapped `::ffff:0:0/96`, translated `::ffff:0:0:0/96`, NAT64
`64:ff9b::/96`, 6to4 `2002::/16` and ISATAP interface ids (`...:0:5efe:a.b.c.d`). Forms whose
IPv4 address sits where the operator chose, or is obfuscated, are refused outright
(EMBEDDING_REFUSED: local-use NAT64 `64:ff9b:1::/48`, Teredo `2001::/32`).
"""

from __future__ import annotations

import ipaddress

import httpx

from skyhigh.net.errors import TargetRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Credentials for the whole instance (or pod) live here; no setting opens them.
ALWAYS_REFUSED = tuple(
    ipaddress.ip_network(network)
    for network in (
        "169.254.169.254/32",  # AWS, GCP, Azure, OpenStack, DigitalOcean instance metadata
        "169.254.170.2/32",  # AWS ECS task credentials
        "169.254.170.23/32",  # AWS EKS Pod Identity
        "100.100.100.200/32",  # Alibaba Cloud metadata
        "168.63.129.16/32",  # Azure WireServer (a global address)
        "192.0.0.0/24",  # IETF protocol assignments; Oracle Cloud metadata is 192.0.0.192
        "fd00:ec2::254/128",  # AWS instance metadata over IPv6
        "fd00:ec2::23/128",  # AWS EKS Pod Identity over IPv6
        "fec0::/10",  # deprecated site-local; Python 3.11 calls it global
    )
)
# What an allow-private setting opens: an intranet, not the host's link or provider.
PRIVATE_ALLOWED = tuple(
    ipaddress.ip_network(network)
    for network in (
        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # RFC 1918
        "127.0.0.0/8", "::1/128",  # loopback
        "fc00::/7",  # IPv6 unique local
    )
)  # fmt: skip
# IPv6 ranges carrying an IPv4 address in their last 32 bits; Python does not classify the
# embedded address for most of them. (`::` and `::1` in ::/96 keep their IPv6 meaning.)
_LAST32_EMBEDDING = tuple(
    ipaddress.ip_network(network)
    for network in (
        "::/96",  # IPv4-compatible (deprecated): ::a9fe:a9fe is 169.254.169.254
        "::ffff:0:0/96",  # IPv4-mapped
        "::ffff:0:0:0/96",  # IPv4-translated (SIIT)
        "64:ff9b::/96",  # NAT64 well-known prefix
    )
)
# The IPv4 address sits at an operator-chosen offset (RFC 6052 prefixes of any length), or is
# XOR-obfuscated (Teredo): no one mapping is right, so no address there is contacted.
EMBEDDING_REFUSED = tuple(
    ipaddress.ip_network(network) for network in ("64:ff9b:1::/48", "2001::/32")
)
# ISATAP interface identifiers (RFC 5214): bits 64-95 are 0000:5efe or 0200:5efe (the u bit).
_ISATAP_IDS = (0x00005EFE, 0x02005EFE)


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

    ALWAYS_REFUSED stays refused with `allow_private`: reaching an intranet host is a
    deployment choice, handing out the instance's credentials never is.
    """
    original = ipaddress.ip_address(address)
    if any(original in network for network in EMBEDDING_REFUSED):
        return f"an IPv6 address that hides an IPv4 address (NAT64 local-use or Teredo: {original})"
    for ip in _judged(original):
        reason = _reason(ip, allow_private=allow_private)
        if reason is not None:
            return reason
    return None


def _reason(ip: IPAddress, *, allow_private: bool) -> str | None:
    if _always_refused(ip):
        return f"a cloud metadata or reserved address ({ip})"
    if ip.is_global and not ip.is_multicast:
        return None
    if allow_private and _private_allowed(ip):
        return None
    return _private_kind(ip)


def refused(message: str, address: IPAddress) -> TargetRefused:
    """TargetRefused for a blocked `address`, noting whether allow-private would open it."""
    ip = _embedded_ipv4(address)
    return TargetRefused(
        message, allow_private_helps=_private_allowed(ip) and not _always_refused(ip)
    )


def _always_refused(ip: IPAddress) -> bool:
    return any(ip in network for network in ALWAYS_REFUSED)


def _private_allowed(ip: IPAddress) -> bool:
    return any(ip in network for network in PRIVATE_ALLOWED)


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
    """The IPv4 address an IPv6 address carrying one really reaches (see the module docstring)."""
    if isinstance(ip, ipaddress.IPv4Address):
        return ip
    if ip.sixtofour is not None:
        return ip.sixtofour
    value = int(ip)
    last32 = ipaddress.IPv4Address(value & 0xFFFFFFFF)
    if value <= 1:  # :: and ::1, unspecified and loopback in their own right
        return ip
    if any(ip in network for network in _LAST32_EMBEDDING):
        return last32
    if _isatap(ip):
        return last32
    return ip


def _isatap(ip: IPAddress) -> bool:
    return isinstance(ip, ipaddress.IPv6Address) and (int(ip) >> 32) & 0xFFFFFFFF in _ISATAP_IDS


def _judged(ip: IPAddress) -> tuple[IPAddress, ...]:
    """What must be allowed for `ip` to be: an ISATAP address is routed by its IPv6 prefix to
    its IPv4 address, so both; any other form carrying IPv4 by its IPv4 address alone."""
    embedded = _embedded_ipv4(ip)
    return (ip, embedded) if _isatap(ip) else (embedded,)


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
