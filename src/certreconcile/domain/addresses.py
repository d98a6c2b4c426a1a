"""Which network addresses a webhook may be sent to (design 5c), checked twice.

At ``validate`` the URL's host, when it is an address literal; at deploy every address the
host resolves to (``certreconcile.plugins.targets.webhook``). Unspecified, multicast and
broadcast addresses are always refused; link-local and cloud-metadata addresses, also
inside IPv4-mapped, NAT64 and 6to4 IPv6 addresses, unless ``allow_link_local``. Loopback
and private (RFC 1918, ULA) addresses are allowed: receivers are usually internal services.

A host in a legacy numeric form (``2852039166``, ``0xa9fea9fe``, ``0251.0376.0251.0376``,
``127.1``), which the C resolver reads as an IPv4 address, is refused outright: it hides
the address from a reviewer.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["IPAddress", "address_refusal", "host_address", "is_legacy_numeric_host"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(text)
    for text in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack... instance metadata
        "169.254.170.2",  # AWS ECS task metadata and credentials
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd20:ce::254",  # GCP metadata over IPv6
        "100.100.100.200",  # Alibaba Cloud metadata
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_BROADCAST = ipaddress.IPv4Address("255.255.255.255")
# One to four dot-separated numbers, decimal, octal (leading 0) or hex (0x): what inet_aton takes.
_NUMERIC_HOST = re.compile(r"^(?:0x[0-9a-f]*|[0-9]+)(?:\.(?:0x[0-9a-f]*|[0-9]+)){0,3}\.?$", re.IGNORECASE)


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for (IPv4-mapped, NAT64, 6to4), if any."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.sixtofour


def address_refusal(address: IPAddress, *, allow_link_local: bool = False) -> str | None:
    """Why a webhook may not be sent to ``address``; None when it may."""
    for candidate in (address, _embedded_ipv4(address)):
        if candidate is None:
            continue
        if candidate.is_unspecified or candidate.is_multicast or candidate == _BROADCAST:
            return "not a unicast address"
        if allow_link_local:
            continue
        if candidate in _METADATA_ADDRESSES:
            return "a cloud metadata address"
        if candidate.is_link_local:
            return "a link-local address"
    return None


def host_address(host: str) -> IPAddress | None:
    """The address of an address-literal host (``10.0.0.1``, ``::1``, ``fe80::1%eth0``); None for a name."""
    try:
        return ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None


def is_legacy_numeric_host(host: str) -> bool:
    """A host the resolver would read as IPv4 although it is not in dotted-decimal form."""
    return bool(_NUMERIC_HOST.match(host)) and host_address(host.rstrip(".")) is None
