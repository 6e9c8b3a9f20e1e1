"""The address rules for outcome events (SSRF): which addresses a notify_url may reach."""

from __future__ import annotations

import pytest

from core.notify_urls import NotifyUrlError, address_problem, check_notify_url


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.0.0.8", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("0.0.0.0", "unspecified"),  # noqa: S104
        ("224.0.0.1", "multicast"),
        ("::ffff:10.0.0.1", "private"),
        ("100.64.0.1", "not a public"),
    ],
)
def test_non_public_addresses_are_named(address: str, kind: str) -> None:
    assert kind in (address_problem(address) or "")


@pytest.mark.parametrize("address", ["93.184.215.14", "2606:2800:21f:cb07:6820:80da:af6b:8b2c"])
def test_public_addresses_pass(address: str) -> None:
    assert address_problem(address) is None


async def test_names_are_resolved_and_every_address_must_be_public() -> None:
    with pytest.raises(NotifyUrlError, match=r"localhost resolves to .* loopback"):
        await check_notify_url("http://localhost:8080/x", allow_private=False)
    await check_notify_url("http://localhost:8080/x", allow_private=True)


async def test_a_literal_private_address_is_refused_without_resolving() -> None:
    with pytest.raises(NotifyUrlError, match=r"10\.9\.8\.7 is a private address"):
        await check_notify_url("https://10.9.8.7/x", allow_private=False)
