"""DNS resolution with the address policy applied to every answer.

A name is resolved once, here, and the caller connects to one of the addresses returned
(`skyhigh.net.pinned`): a second lookup by the HTTP client could get another answer (DNS
rebinding). One refused address refuses the whole name, since which answer gets used is
not ours to predict.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from concurrent.futures import ThreadPoolExecutor

import httpx

from skyhigh.net.errors import TargetUnreachable
from skyhigh.net.policy import IPAddress, blocked_reason, refused

log = logging.getLogger(__name__)

# getaddrinfo cannot be interrupted; running it here lets a caller give up on a slow resolver.
# One pool for every outbound request, so a hung resolver costs at most these threads.
_RESOLVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="skyhigh-dns")


def resolve_checked(url: httpx.URL, *, allow_private: bool, timeout_s: float) -> list[IPAddress]:
    """The addresses of the URL's host, each allowed by the policy; never empty.

    Raises TargetRefused (an address is blocked) or TargetUnreachable (DNS failed or took
    longer than `timeout_s`).
    """
    host = url.raw_host.decode("ascii")
    port = url.port or (443 if url.scheme == "https" else 80)
    future = _RESOLVER.submit(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM)
    try:
        infos = future.result(timeout=timeout_s)
    except TimeoutError:
        raise TargetUnreachable(f"DNS lookup of {host!r} timed out") from None
    except OSError as exc:
        # The resolver's reason (no such name, no address, server failure) describes the
        # internal DNS to whoever chose the URL: logged here, not returned.
        log.info("DNS lookup failed", extra={"error": str(exc.strerror or exc)})
        raise TargetUnreachable(f"cannot resolve {host!r}") from None
    # sockaddr[0] may carry an IPv6 scope ("fe80::1%eth0"); the policy needs the address.
    addresses = list(
        dict.fromkeys(ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos)
    )
    if not addresses:
        raise TargetUnreachable(f"{host!r} has no addresses")
    for address in addresses:
        reason = blocked_reason(address, allow_private=allow_private)
        if reason is not None:
            # Which kind of address (loopback, private, metadata...) a name has is a fact about
            # the internal network: logged, not told to whoever chose the URL.
            log.info("refused a resolved address", extra={"error": reason})
            raise refused(
                f"{url.host!r} resolves to an address this server may not contact", address
            )
    return addresses
