"""Where outcome events may be sent (a refund's ``notify_url``): the rules against SSRF.

An event is an HTTP POST the worker makes to a URL a caller chose, so a caller could aim it
at the worker's own network (a cloud metadata service, an admin port on loopback). A URL is
refused unless it is plain http(s) with a host and no credentials, and every address its host
resolves to is public; ``allow_private`` (setting ``REFUNDS_EVENTS_ALLOW_PRIVATE``) lifts the
address rule for a deployment whose receivers live on a private network (and for the dev
stack). The address rule is checked where a refund is started and again before each delivery
(a name may resolve elsewhere by then).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, Field

MAX_URL_LENGTH = 2000


class NotifyUrlError(ValueError):
    """A notify URL that may not be used; the message says why, for the caller."""


def check_syntax(url: str) -> str:
    """The URL's host when it is usable as written, else :class:`NotifyUrlError`."""
    if len(url) > MAX_URL_LENGTH:
        raise NotifyUrlError(f"notify_url is longer than {MAX_URL_LENGTH} characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:
        raise NotifyUrlError(f"notify_url is not a valid URL: {err}") from None
    if parts.scheme not in ("http", "https"):
        raise NotifyUrlError("notify_url must be an http:// or https:// URL")
    if not parts.hostname:
        raise NotifyUrlError("notify_url has no host")
    if parts.username is not None or parts.password is not None:
        raise NotifyUrlError("notify_url must not hold credentials (user:password@)")
    if parts.fragment:
        raise NotifyUrlError("notify_url must not have a fragment (#...)")
    if port == 0:
        raise NotifyUrlError("notify_url has port 0")
    return parts.hostname


def _usable(url: str) -> str:
    check_syntax(url)
    return url


# A notify URL field (a request's, an API key's default): usable as written, or refused with
# the reason on the field.
NotifyUrl = Annotated[str, Field(min_length=1, max_length=MAX_URL_LENGTH), AfterValidator(_usable)]


def literal_address(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def address_problem(address: str) -> str | None:
    """Why events may not go to this IP address (None: a public address)."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for kind, test in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("unspecified", ip.is_unspecified),
        ("multicast", ip.is_multicast),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
    ):
        if test:
            return f"{ip} is a {kind} address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


def refuse_addresses(host: str, addresses: list[str]) -> None:
    """:class:`NotifyUrlError` unless every address ``host`` resolved to is public."""
    if not addresses:
        raise NotifyUrlError(f"notify_url host {host} does not resolve")
    for address in addresses:
        problem = address_problem(address)
        if problem is not None:
            raise NotifyUrlError(
                f"notify_url host {host} resolves to {problem}: events go only to public "
                "addresses unless REFUNDS_EVENTS_ALLOW_PRIVATE=true where the refund is "
                "started and on the worker"
            )


async def check_notify_url(url: str, *, allow_private: bool) -> None:
    """:class:`NotifyUrlError` unless events may go to ``url``; resolves its host (the
    address rules, core/notify_urls.py) unless private addresses are allowed."""
    host = check_syntax(url)
    if allow_private:
        return
    literal = literal_address(host)
    if literal is not None:
        refuse_addresses(host, [str(literal)])
        return
    port = urlsplit(url).port or (443 if url.startswith("https:") else 80)
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as err:
        raise NotifyUrlError(f"notify_url host {host} does not resolve: {err}") from None
    refuse_addresses(host, sorted({str(info[4][0]) for info in infos}))
