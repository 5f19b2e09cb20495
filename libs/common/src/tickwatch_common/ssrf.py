"""Webhooks reach only the public Internet: one rule for which addresses and URLs may be called.

The gateway judges a webhook when an alert is saved (:func:`check_webhook_target`), the notifier
again when it connects, on the addresses it is about to use (its resolver and literal-host
check), since a name may resolve elsewhere later. Both read this module, so they cannot disagree
(the notifier once let ``2002:7f00:1::1``, 6to4 for 127.0.0.1, through).

An address is allowed only when it is public unicast. IPv6 forms that carry an IPv4 address
(IPv4-mapped, -translated and -compatible, NAT64 ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo
``2001::/32``) are judged by the IPv4 address they lead to; the local-use NAT64 prefix
``64:ff9b:1::/48`` is refused outright, since what it translates to is a site's own choice.

A URL host is an IP literal in every spelling a resolver accepts (``2130706433``,
``0177.0.0.1``, ``0x7f.1``, ``127.1``), not only the dotted quad :mod:`ipaddress` reads: the
system resolver, and so any HTTP client, would connect to 127.0.0.1 for each of them.

Pure except :func:`resolve_host`, which :func:`check_webhook_target` takes as a parameter so the
rules are tested with plain data.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit

IPAddress = IPv4Address | IPv6Address
Resolver = Callable[[str], Awaitable[list[str]]]
"""A host name in, every address it resolves to out (``OSError``/``TimeoutError`` if none)."""

REFUSED_TARGET = "must not point at a loopback, private or link-local address"


class BlockedAddress(ValueError):
    """A host that is, or resolves only to, addresses a webhook must not reach."""


def _v4(table: dict[str, str]) -> tuple[tuple[IPv4Network, str], ...]:
    return tuple((IPv4Network(cidr), reason) for cidr, reason in table.items())


def _v6(table: dict[str, str]) -> tuple[tuple[IPv6Network, str], ...]:
    return tuple((IPv6Network(cidr), reason) for cidr, reason in table.items())


# Checked in order; what none of them names must still be ``is_global`` to pass.
_IPV4_BLOCKED = _v4(
    {
        "0.0.0.0/8": "unspecified",
        "127.0.0.0/8": "loopback",
        "10.0.0.0/8": "private",
        "172.16.0.0/12": "private",
        "192.168.0.0/16": "private",
        "100.64.0.0/10": "shared address space (carrier-grade NAT)",
        "169.254.0.0/16": "link-local",
        "192.0.0.0/24": "IETF protocol assignments",
        "192.0.2.0/24": "documentation",
        "198.51.100.0/24": "documentation",
        "203.0.113.0/24": "documentation",
        "198.18.0.0/15": "benchmarking",
        "192.88.99.0/24": "6to4 relay anycast",
        "224.0.0.0/4": "multicast",
        "240.0.0.0/4": "reserved",  # 255.255.255.255 (broadcast) included
    },
)
_IPV6_BLOCKED = _v6(
    {
        "::/128": "unspecified",
        "::1/128": "loopback",
        "64:ff9b:1::/48": "local-use NAT64",
        "100::/64": "discard-only",
        "2001:db8::/32": "documentation",
        "3fff::/20": "documentation",
        "2001:2::/48": "benchmarking",
        "fc00::/7": "private (unique local)",
        "fe80::/10": "link-local",
        "fec0::/10": "site-local",
        "ff00::/8": "multicast",
    },
)
_IPV4_TRANSLATED = IPv6Network("::ffff:0:0:0/96")
_IPV4_COMPATIBLE = IPv6Network("::/96")
_NAT64 = IPv6Network("64:ff9b::/96")


def _embedded_ipv4(ip: IPv6Address) -> tuple[str, IPv4Address] | None:
    """The IPv4 address an IPv6 one leads to, and the form that embeds it, if any."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped
    low32 = IPv4Address(int(ip) & 0xFFFF_FFFF)
    if ip in _IPV4_TRANSLATED:
        return "IPv4-translated", low32
    if ip in _IPV4_COMPATIBLE and int(ip) > 1:  # :: and ::1 are themselves
        return "IPv4-compatible", low32
    if ip in _NAT64:
        return "NAT64", low32
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour
    if ip.teredo is not None:
        return "Teredo", ip.teredo[1]  # (server, client): the client is where it goes
    return None


def _ipv4_reason(ip: IPv4Address) -> str | None:
    for network, reason in _IPV4_BLOCKED:
        if ip in network:
            return reason
    return None if ip.is_global else "not globally reachable"


def _ipv6_reason(ip: IPv6Address) -> str | None:
    for network, reason in _IPV6_BLOCKED:
        if ip in network:
            return reason
    if ip.is_reserved:
        return "reserved"
    return None if ip.is_global else "not globally reachable"


def _strip_zone_and_brackets(address: str) -> str:
    if address.startswith("[") and address.endswith("]"):
        address = address[1:-1]
    return address.split("%", 1)[0]


def blocked_reason(address: str) -> str | None:
    """Why a webhook must not connect to ``address`` (an IP address, ``%zone`` allowed);
    ``None`` when it is public unicast. Anything that is not an IP address is refused."""
    try:
        ip = ipaddress.ip_address(_strip_zone_and_brackets(address))
    except ValueError:
        return "not an IP address"
    if isinstance(ip, IPv4Address):
        return _ipv4_reason(ip)
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        form, ipv4 = embedded
        reason = _ipv4_reason(ipv4)
        return None if reason is None else f"{form} address of {ipv4}, which is {reason}"
    return _ipv6_reason(ip)


def is_public_address(address: str) -> bool:
    """Whether a webhook may connect to ``address``: public unicast only."""
    return blocked_reason(address) is None


_IPV4_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")


def _inet_aton(host: str) -> IPv4Address | None:
    """``host`` read as the C library's ``inet_aton`` (and so ``getaddrinfo``) reads it: one to
    four parts, each decimal, octal (leading ``0``) or hex (``0x``); the last part fills the
    bytes the others leave (``127.1`` is 127.0.0.1, ``2130706433`` is too)."""
    parts = host.split(".")
    if len(parts) > 4 or not all(_IPV4_PART.fullmatch(p) for p in parts):
        return None
    values = [
        int(p, 16) if p[:2] in ("0x", "0X") else int(p, 8 if p[0] == "0" else 10) for p in parts
    ]
    *leading, last = values
    if any(v > 0xFF for v in leading) or last >= 1 << (8 * (4 - len(leading))):
        return None
    number = last
    for i, value in enumerate(leading):
        number |= value << (8 * (3 - i))
    return IPv4Address(number)


def parse_host_address(host: str) -> IPAddress | None:
    """The IP address a URL host spells, in any form a resolver accepts (dotted, a single
    decimal, octal or hex number, short forms, bracketed IPv6 with or without a zone);
    ``None`` when the host is a name."""
    text = _strip_zone_and_brackets(host) if ":" in host else host.removesuffix(".")
    if ":" in text:
        try:
            return IPv6Address(text)
        except ValueError:
            return None
    return _inet_aton(text)


def is_localhost_name(host: str) -> bool:
    """``localhost`` and every name under it (RFC 6761: they never leave the machine)."""
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def webhook_url_problem(url: str, max_length: int) -> str | None:
    """Why ``url`` cannot be a webhook, judged by its text alone; ``None`` when it can."""
    if len(url) > max_length:
        return f"at most {max_length} characters"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "not a valid URL"
    if parts.scheme not in ("http", "https"):
        return "must be an http or https URL"
    if not parts.hostname:
        return "must name a host"
    if parts.username is not None or parts.password is not None:
        return "must not carry credentials"
    if port == 0:
        return "port 0 is not allowed"
    return None


async def check_webhook_target(
    url: str, *, allow_private: bool, resolve: Resolver, max_length: int
) -> str | None:
    """Why the webhook at ``url`` must be refused (its syntax, a ``localhost`` name, or a host
    that is or resolves to a non-public address); ``None`` when it may be called. The notifier
    checks again when it connects, since a name can resolve differently later."""
    problem = webhook_url_problem(url, max_length)
    if problem or allow_private:
        return problem
    host = urlsplit(url).hostname or ""
    literal = parse_host_address(host)
    if literal is not None:
        addresses = [str(literal)]
    elif is_localhost_name(host):
        return REFUSED_TARGET
    else:
        try:
            addresses = await resolve(host)
        except (OSError, TimeoutError, UnicodeError):
            return f"host {host[:80]!r} does not resolve"
        if not addresses:
            return f"host {host[:80]!r} does not resolve"
    if not all(is_public_address(a) for a in addresses):
        return REFUSED_TARGET
    return None


async def resolve_host(host: str, timeout_s: float = 3.0) -> list[str]:
    """Every address ``host`` resolves to (the system resolver, bounded in time)."""
    loop = asyncio.get_running_loop()
    infos = await asyncio.wait_for(loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), timeout_s)
    return sorted({str(info[4][0]) for info in infos})
