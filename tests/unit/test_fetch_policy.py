"""common.url_fetch's policy: the STRATUS_FETCH_ALLOW setting, and which addresses count as
public (no network needed; fetching itself is tested in test_url_fetch.py)."""

from __future__ import annotations

import ipaddress

import pytest

from common.url_fetch import FetchPolicy, is_public


def test_the_allow_list_parses_hosts_addresses_and_networks():
    policy = FetchPolicy.from_setting(" 10.0.0.0/8, Internal.Example. ,127.0.0.1,,fd00::/8 ")
    assert policy.hosts == frozenset({"internal.example"})
    assert [str(n) for n in policy.networks] == ["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"]
    ip = ipaddress.ip_address
    assert policy.allows("INTERNAL.example.", ip("169.254.169.254"))  # the name is trusted
    assert policy.allows("anything", ip("10.1.2.3"))
    assert policy.allows("anything", ip("::ffff:10.1.2.3"))  # its IPv4-mapped form too
    assert policy.allows("anything", ip("fd00::1"))
    assert not policy.allows("other.example", ip("127.0.0.2"))
    assert not policy.allows("internal.example.com", ip("192.168.0.1"))
    assert policy.allows("public.example", ip("8.8.8.8"))
    assert FetchPolicy.from_setting("") == FetchPolicy()


@pytest.mark.parametrize(
    "entry", ["10.0.0.1/8", "10.0.0.0/33", "http://host", "host:80", "*.example.com", "10.0.0.256"]
)
def test_an_invalid_allow_list_entry_fails_naming_it(entry):
    with pytest.raises(ValueError) as caught:
        FetchPolicy.from_setting(f"127.0.0.1,{entry}")
    assert repr(entry) in str(caught.value)


@pytest.mark.parametrize(
    ("address", "public"),
    [
        ("8.8.8.8", True),
        ("2606:4700::1111", True),
        ("::ffff:8.8.8.8", True),
        ("2002:808:808::", True),  # 6to4 of a public address
        ("127.0.0.1", False),
        ("10.1.2.3", False),
        ("172.16.0.1", False),
        ("192.168.1.1", False),
        ("169.254.169.254", False),
        ("100.64.0.1", False),
        ("0.0.0.0", False),
        ("255.255.255.255", False),
        ("224.0.0.1", False),  # multicast, which is_global calls global
        ("240.0.0.1", False),
        ("::", False),
        ("::1", False),
        ("fe80::1", False),
        ("fc00::1", False),
        ("fec0::1", False),  # site-local, deprecated
        ("ff0e::1", False),
        ("::ffff:127.0.0.1", False),
        ("::ffff:169.254.169.254", False),
        ("2002:7f00:1::", False),  # 6to4 of 127.0.0.1
        ("2002:a9fe:a9fe::", False),  # 6to4 of 169.254.169.254
        ("64:ff9b::7f00:1", False),  # NAT64 of 127.0.0.1
        ("64:ff9b:1::1", False),  # local-use NAT64
        ("::7f00:1", False),  # IPv4-compatible 127.0.0.1
        ("2001:db8::1", False),
    ],
)
def test_what_counts_as_public(address, public):
    assert is_public(ipaddress.ip_address(address)) is public
