"""Which addresses a download may reach: public ones only, unless private networks are allowed.

Hostnames are checked inside the resolver, so the connection goes to exactly the addresses that were
checked (no second lookup an attacker's DNS could answer differently). Literal IPs never reach the
resolver, so the downloader checks them itself, on every redirect hop.
"""

from __future__ import annotations

import ipaddress
import socket

from aiohttp.abc import AbstractResolver
from aiohttp.resolver import DefaultResolver


class BlockedAddress(OSError):
    """The host resolves to an address this run may not reach."""


def blocked_reason(address: str) -> str | None:
    """What kind of non-public address `address` (an IP literal) is ("a loopback address"), or None."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    for kind in ("loopback", "link_local", "multicast", "unspecified", "reserved", "private"):  # most telling first
        if getattr(ip, f"is_{kind}"):
            return f"a {kind.replace('_', '-')} address"
    return None


def literal_ip(host: str) -> str | None:
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return None
    return host


class GuardedResolver(AbstractResolver):
    """A resolver that refuses a host if any of its addresses is not public."""

    def __init__(self):
        self._inner = DefaultResolver()

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        infos = await self._inner.resolve(host, port, family)
        for info in infos:
            reason = blocked_reason(info["host"])
            if reason is not None:
                raise BlockedAddress(f"{host} resolves to {info['host']}, {reason}")
        return infos

    async def close(self) -> None:
        await self._inner.close()
