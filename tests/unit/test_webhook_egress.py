"""The SSRF guard's decisions (services/gateway/notifications/egress.py): a webhook goes to a public
address over https, and to loopback, private, link-local, unspecified or multicast addresses only
when the operator allowed them. Names that resolve to such addresses are refused like the addresses:
`localhost` through the system's own resolver; names resolving to a private or metadata address
through a resolver handed in (the only way to make a name resolve there without owning a DNS zone)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from rapport.services.gateway.notifications.egress import EgressPolicy, check_url, resolve

STRICT = EgressPolicy()

REFUSED = {
    "loopback": ["127.0.0.1", "127.8.9.10", "::1", "::ffff:127.0.0.1"],
    "private": ["10.0.0.8", "172.16.4.2", "172.31.255.255", "192.168.1.20", "fc00::1", "fd12:3456::7"],
    "link-local": ["169.254.169.254", "169.254.0.1", "fe80::1", "::ffff:169.254.169.254"],
    "unspecified": ["0.0.0.0", "::"],
    "multicast": ["224.0.0.1", "239.255.255.250", "ff02::1"],
    "not a public address": ["100.64.0.1", "192.0.2.10", "240.0.0.1"],  # shared, documentation, reserved
}


@pytest.mark.parametrize(("kind", "address"), [(k, a) for k, addresses in REFUSED.items() for a in addresses])
def test_every_class_of_non_public_address_is_refused_and_named(kind: str, address: str) -> None:
    problem = STRICT.address_problem("hooks.clinic.example", address)
    assert problem is not None and problem.startswith(kind)
    literal = f"[{address}]" if ":" in address else address
    problem = STRICT.url_problem(f"https://{literal}:8443/hook")
    assert problem is not None and kind in problem


@pytest.mark.parametrize("address", ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111"])
def test_a_public_address_over_https_is_taken(address: str) -> None:
    literal = f"[{address}]" if ":" in address else address
    assert STRICT.address_problem("hooks.clinic.example", address) is None
    assert STRICT.url_problem(f"https://{literal}/hook") is None


@pytest.mark.parametrize("url", ["ftp://hooks.clinic.example/x", "file:///etc/passwd", "gopher://hooks.clinic.example/",
                                 "https:///nohost", "hooks.clinic.example/x"])
def test_a_scheme_other_than_http_or_https_is_refused(url: str) -> None:
    assert STRICT.url_problem(url) == "an absolute http:// or https:// URL is needed"


def test_plain_http_is_refused_unless_allowed() -> None:
    problem = STRICT.url_problem("http://hooks.clinic.example/x")
    assert problem is not None and problem.startswith("https is needed")
    assert EgressPolicy(allow_http=True).url_problem("http://hooks.clinic.example/x") is None


def test_every_address_a_name_resolves_to_must_be_public() -> None:
    """A rebinding answer mixes a public and a private address: one refused address refuses the name."""
    assert STRICT.addresses_problem("hooks.clinic.example", ["93.184.215.14", "10.0.0.8"]) == (
        "the host resolves to an address that is private (RFC 1918, fc00::/7)")
    assert STRICT.addresses_problem("hooks.clinic.example", ["93.184.215.14", "2606:4700:4700::1111"]) is None


async def test_localhost_is_refused_through_the_systems_own_resolver() -> None:
    assert "127.0.0.1" in await resolve("localhost", 443)
    problem = await check_url(STRICT, "https://localhost:8443/hook")
    assert problem is not None and problem.startswith("the host resolves to an address that is loopback")


async def test_a_name_resolving_to_a_private_or_the_metadata_address_is_refused_when_given() -> None:
    zone = {"ehr.clinic.internal": ["10.20.0.5"], "metadata.cloud.example": ["169.254.169.254"],
            "hooks.clinic.example": ["93.184.215.14"]}

    async def resolver(host: str, port: int) -> Sequence[str]:
        return zone[host]

    private = await check_url(STRICT, "https://ehr.clinic.internal/api", resolver=resolver)
    assert private == "the host resolves to an address that is private (RFC 1918, fc00::/7)"
    metadata = await check_url(STRICT, "https://metadata.cloud.example/latest/meta-data", resolver=resolver)
    assert metadata is not None and "link-local" in metadata
    assert await check_url(STRICT, "https://hooks.clinic.example/x", resolver=resolver) is None


async def test_a_name_that_does_not_resolve_yet_is_taken_since_every_try_checks_again() -> None:
    async def nowhere(host: str, port: int) -> Sequence[str]:
        raise OSError("no such name")

    assert await check_url(STRICT, "https://hooks.clinic.example/x", resolver=nowhere) is None


def test_the_setting_allows_named_hosts_addresses_and_networks_and_nothing_else() -> None:
    policy = EgressPolicy.from_setting(" hooks.clinic.internal, 10.20.0.0/16 ,127.0.0.1,fd00::/8", allow_http=True)
    assert policy.address_problem("hooks.clinic.internal", "10.99.0.1") is None  # the name is vouched for
    assert policy.address_problem("HOOKS.clinic.internal.", "127.0.0.1") is None
    assert policy.address_problem("anything.clinic.internal", "10.20.7.7") is None
    assert policy.address_problem("anything.clinic.internal", "127.0.0.1") is None
    assert policy.address_problem("anything.clinic.internal", "fd00::5") is None
    assert policy.address_problem("anything.clinic.internal", "10.21.0.1") is not None
    assert policy.address_problem("anything.clinic.internal", "127.0.0.2") is not None
    assert policy.address_problem("anything.clinic.internal", "169.254.169.254") is not None
    assert policy.url_problem("http://127.0.0.1:9000/rapport") is None
    assert EgressPolicy.from_setting("") == EgressPolicy()


def test_a_setting_entry_that_is_no_host_and_no_network_stops_the_gateway_at_start() -> None:
    with pytest.raises(ValueError, match="RAPPORT_WEBHOOK_ALLOW_HOSTS"):
        EgressPolicy.from_setting("hooks.clinic.internal,http://10.0.0.1/")
