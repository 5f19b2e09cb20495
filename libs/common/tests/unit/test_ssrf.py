"""The one webhook address rule: public unicast only, IPv4 judged through every IPv6 wrapping,
IP literals in every spelling a resolver reads, and the URL checks built on them."""

from __future__ import annotations

import socket
from ipaddress import IPv4Address, IPv6Address, ip_address

import pytest
from hypothesis import given
from hypothesis import strategies as st
from tickwatch_common.ssrf import (
    REFUSED_TARGET,
    blocked_reason,
    check_webhook_target,
    is_localhost_name,
    is_public_address,
    parse_host_address,
    resolve_host,
    webhook_url_problem,
)


def teredo(client: str, server: str = "65.54.227.120") -> str:
    """A Teredo address (2001::/32) whose client is ``client``: its low 32 bits, inverted."""
    inverted = int(IPv4Address(client)) ^ 0xFFFF_FFFF
    return str(IPv6Address((0x2001_0000 << 96) | (int(IPv4Address(server)) << 64) | inverted))


ALLOWED = [
    "8.8.8.8",
    "1.1.1.1",
    "93.184.215.14",
    "2606:4700::1111",
    "2a00:1450:4001:82b::200e",
    "2002:0808:0808::1",  # 6to4 for 8.8.8.8
    "::ffff:8.8.8.8",  # IPv4-mapped
    "::8.8.8.8",  # IPv4-compatible
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "64:ff9b::8.8.4.4",
    teredo("8.8.8.8"),
]

REFUSED = [
    # IPv4
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "unspecified"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.8", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.1.1", "private"),
    ("100.64.0.1", "shared address space"),
    ("100.127.255.254", "shared address space"),
    ("169.254.169.254", "link-local"),
    ("192.0.0.9", "IETF protocol assignments"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("192.88.99.1", "6to4 relay anycast"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    # IPv6
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("[::1]", "loopback"),
    ("fe80::1", "link-local"),
    ("fe80::1%eth0", "link-local"),
    ("fec0::1", "site-local"),
    ("fc00::1", "private"),
    ("fd12:3456:789a::1", "private"),
    ("ff02::1", "multicast"),
    ("ff0e::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("2001:2::1", "benchmarking"),
    ("100::1", "discard-only"),
    ("4000::1", "reserved"),
    ("64:ff9b:1::808:808", "local-use NAT64"),
    # IPv6 that leads to IPv4
    ("::ffff:127.0.0.1", "IPv4-mapped address of 127.0.0.1, which is loopback"),
    ("::ffff:7f00:1", "IPv4-mapped address of 127.0.0.1, which is loopback"),
    ("::ffff:10.0.0.1", "IPv4-mapped address of 10.0.0.1, which is private"),
    ("::ffff:0:127.0.0.1", "IPv4-translated address of 127.0.0.1, which is loopback"),
    ("::127.0.0.1", "IPv4-compatible address of 127.0.0.1, which is loopback"),
    ("::169.254.169.254", "IPv4-compatible address of 169.254.169.254, which is link-local"),
    ("64:ff9b::7f00:1", "NAT64 address of 127.0.0.1, which is loopback"),
    ("64:ff9b::a9fe:a9fe", "NAT64 address of 169.254.169.254, which is link-local"),
    ("2002:7f00:1::1", "6to4 address of 127.0.0.1, which is loopback"),
    ("2002:a00:1::", "6to4 address of 10.0.0.1, which is private"),
    ("2002:6440:1::1", "6to4 address of 100.64.0.1, which is shared address space"),
    (teredo("127.0.0.1"), "Teredo address of 127.0.0.1, which is loopback"),
    (teredo("192.168.0.10"), "Teredo address of 192.168.0.10, which is private"),
    # not an address at all
    ("example.com", "not an IP address"),
    ("", "not an IP address"),
]


@pytest.mark.parametrize("address", ALLOWED)
def test_public_unicast_is_allowed(address: str) -> None:
    assert blocked_reason(address) is None
    assert is_public_address(address)


@pytest.mark.parametrize(("address", "reason"), REFUSED)
def test_everything_else_is_refused_with_its_reason(address: str, reason: str) -> None:
    found = blocked_reason(address)
    assert found is not None and found.startswith(reason)
    assert not is_public_address(address)


def test_6to4_for_loopback_is_refused_though_python_calls_it_global() -> None:
    """What the notifier let through: ``ipaddress`` says 2002::/16 is global whatever it
    embeds."""
    assert ip_address("2002:7f00:1::1").is_global
    assert not is_public_address("2002:7f00:1::1")


LITERALS = [
    ("127.0.0.1", "127.0.0.1"),
    ("2130706433", "127.0.0.1"),  # one decimal number
    ("0x7f000001", "127.0.0.1"),  # one hex number
    ("0X7F000001", "127.0.0.1"),
    ("017700000001", "127.0.0.1"),  # one octal number
    ("0177.0.0.1", "127.0.0.1"),  # octal part
    ("0x7f.0.0.1", "127.0.0.1"),  # hex part
    ("0x7f.1", "127.0.0.1"),  # a.b: b fills 24 bits
    ("127.1", "127.0.0.1"),
    ("10.1.1", "10.1.0.1"),  # a.b.c: c fills 16 bits
    ("10.1.0x101", "10.1.1.1"),
    ("169.254.43518", "169.254.169.254"),
    ("0", "0.0.0.0"),
    ("4294967295", "255.255.255.255"),
    ("127.0.0.1.", "127.0.0.1"),  # the root's dot
    ("8.8.8.8", "8.8.8.8"),
    ("::1", "::1"),
    ("[::1]", "::1"),
    ("[::ffff:127.0.0.1]", "::ffff:7f00:1"),
    ("2002:7f00:1::1", "2002:7f00:1::1"),
    ("fe80::1%eth0", "fe80::1"),
    ("[fe80::1%25eth0]", "fe80::1"),
]


@pytest.mark.parametrize(("host", "address"), LITERALS)
def test_a_literal_in_any_spelling_is_read_as_its_address(host: str, address: str) -> None:
    assert parse_host_address(host) == ip_address(address)


NAMES = [
    "example.com",
    "hooks.example.test",
    "localhost",
    "1e100.net",
    "0x7f.example",
    "127.0.0.1.example",
    "1.2.3.4.5",  # five parts
    "09.0.0.1",  # 9 is not octal
    "0x",  # hex without a digit
    "256.0.0.1",
    "1.2.3.256",
    "1.2.65536",
    "1.16777216",
    "4294967296",  # past 32 bits
    "1..1",
    ".1",
    "127.0.0.1 x",
    "",
    "[not:an:address]",
]


@pytest.mark.parametrize("host", NAMES)
def test_a_name_is_not_a_literal(host: str) -> None:
    assert parse_host_address(host) is None


def _spelled(n: int, form: str) -> str:
    return {"dec": str(n), "oct": f"0{n:o}", "hex": f"0x{n:x}", "HEX": f"0X{n:X}"}[form]


NUMERIC_PARTS = st.lists(
    st.builds(
        _spelled,
        st.one_of(st.integers(0, 300), st.integers(0, 2**33)),
        st.sampled_from(["dec", "oct", "hex", "HEX"]),
    ),
    min_size=1,
    max_size=5,
).map(".".join)


@given(st.one_of(NUMERIC_PARTS, st.text(alphabet="0123456789abcdefxX.", min_size=1, max_size=24)))
def test_the_ipv4_reading_is_the_c_librarys(host: str) -> None:
    """Whatever ``inet_aton`` (which ``getaddrinfo`` uses for numeric hosts) reads as an
    address, we read as the same address, and nothing else."""
    try:
        expected: IPv4Address | None = IPv4Address(socket.inet_aton(host))
    except OSError:
        expected = None
    got = parse_host_address(host)
    if host.endswith(".") and not host.endswith(".."):
        assert got == parse_host_address(host[:-1])  # we also read a trailing root dot
    else:
        assert got == expected


@pytest.mark.parametrize(
    "host", ["localhost", "LOCALHOST", "localhost.", "api.localhost", "a.b.localhost."]
)
def test_localhost_names(host: str) -> None:
    assert is_localhost_name(host)


@pytest.mark.parametrize("host", ["localhost.example.com", "notlocalhost", "example.com"])
def test_not_localhost_names(host: str) -> None:
    assert not is_localhost_name(host)


URL_PROBLEMS = [
    ("https://hooks.example.com/x", None),
    ("http://hooks.example.com:8080/x?y=1", None),
    ("https://" + "a" * 2041, "at most 2048 characters"),
    ("https://" + "a" * 2040, None),
    ("http://[::1/", "not a valid URL"),
    ("https://hooks.example.com:99999/", "not a valid URL"),
    ("ftp://hooks.example.com/", "must be an http or https URL"),
    ("hooks.example.com/x", "must be an http or https URL"),
    ("https:///path", "must name a host"),
    ("https://user:pw@hooks.example.com/", "must not carry credentials"),
    ("https://user@hooks.example.com/", "must not carry credentials"),
    ("https://hooks.example.com:0/", "port 0 is not allowed"),
]


@pytest.mark.parametrize(("url", "problem"), URL_PROBLEMS)
def test_url_syntax(url: str, problem: str | None) -> None:
    assert webhook_url_problem(url, 2048) == problem


class Dns:
    """A resolver answering from a table; a name not in it does not resolve."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.asked: list[str] = []

    async def __call__(self, host: str) -> list[str]:
        self.asked.append(host)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return self.table[host]


DNS = {
    "public.example.com": ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"],
    "mixed.example.com": ["93.184.215.14", "10.0.0.1"],
    "sixtofour.example.com": ["2002:7f00:1::1"],
    "metadata.example.com": ["169.254.169.254"],
    "empty.example.com": [],
}

TARGETS = [
    ("https://public.example.com/hook", None),
    ("https://8.8.8.8/hook", None),
    ("https://[2002:808:808::1]/hook", None),
    ("https://mixed.example.com/hook", REFUSED_TARGET),
    ("https://sixtofour.example.com/hook", REFUSED_TARGET),
    ("https://metadata.example.com/hook", REFUSED_TARGET),
    ("https://localhost/hook", REFUSED_TARGET),
    ("https://api.localhost./hook", REFUSED_TARGET),
    ("http://127.0.0.1:8080/hook", REFUSED_TARGET),
    ("http://2130706433/hook", REFUSED_TARGET),
    ("http://0x7f000001/hook", REFUSED_TARGET),
    ("http://0177.0.0.1/hook", REFUSED_TARGET),
    ("http://127.1/hook", REFUSED_TARGET),
    ("http://100.64.0.1/hook", REFUSED_TARGET),
    ("http://[::1]/hook", REFUSED_TARGET),
    ("http://[::ffff:127.0.0.1]/hook", REFUSED_TARGET),
    ("http://[64:ff9b::7f00:1]/hook", REFUSED_TARGET),
    ("http://[2002:7f00:1::1]/hook", REFUSED_TARGET),
    (f"http://[{teredo('127.0.0.1')}]/hook", REFUSED_TARGET),
    ("http://[fe80::1%25eth0]/hook", REFUSED_TARGET),
    ("https://nowhere.example.com/hook", "host 'nowhere.example.com' does not resolve"),
    ("https://empty.example.com/hook", "host 'empty.example.com' does not resolve"),
    ("ftp://public.example.com/", "must be an http or https URL"),
]


@pytest.mark.parametrize(("url", "problem"), TARGETS)
async def test_webhook_target(url: str, problem: str | None) -> None:
    got = await check_webhook_target(url, allow_private=False, resolve=Dns(DNS), max_length=2048)
    assert got == problem


async def test_a_literal_or_localhost_is_never_looked_up() -> None:
    dns = Dns(DNS)
    for url in ["http://127.1/", "http://[::1]/", "https://localhost/", "https://8.8.8.8/"]:
        await check_webhook_target(url, allow_private=False, resolve=dns, max_length=2048)
    assert dns.asked == []


async def test_allow_private_checks_only_the_syntax() -> None:
    dns = Dns(DNS)
    for url in ["http://127.0.0.1:8080/hook", "http://localhost/", "http://nowhere.test/"]:
        assert (
            await check_webhook_target(url, allow_private=True, resolve=dns, max_length=2048)
            is None
        )
    assert dns.asked == []
    assert (
        await check_webhook_target("ftp://x/", allow_private=True, resolve=dns, max_length=2048)
        == "must be an http or https URL"
    )


async def test_resolve_host_answers_every_address_once() -> None:
    assert await resolve_host("127.0.0.1") == ["127.0.0.1"]
