"""Where a webhook may be delivered: public addresses only, unless the operator allows others.

A subscription's URL is chosen by an admin, but the worker sends from inside the team's network:
without a check it would POST to the database host, a cloud metadata service (169.254.169.254) or
anything on loopback. So, unless `CIT_WEBHOOK_ALLOW_PRIVATE_ADDRESSES=true` (a receiver on the
same machine or network, as in tests and some set-ups):

- at creation and update, a URL whose host is `localhost` or a literal non-public address is
  refused (400);
- at every delivery the host is resolved and refused if any of its addresses is not public
  (loopback, private, link-local, shared, reserved, multicast, unspecified), and the request is
  then sent to the address that was checked (the Host header and TLS server name stay the
  host's), so that a DNS answer changing between the check and the connection (rebinding)
  cannot redirect it.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass, field
from typing import Any

import httpx

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
SETTING = "CIT_WEBHOOK_ALLOW_PRIVATE_ADDRESSES"


class Refused(Exception):
    """The URL's host is, or resolves to, an address webhooks may not be sent to."""


def public(address: Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]").split("%")[0])
    except ValueError:
        return None


def check_url(url: str) -> Address | None:
    """The checks that need no DNS (creation, update): raises Refused; returns the host's
    address when the URL names one (nothing left to resolve)."""
    host = (httpx.URL(url).host or "").lower().rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        raise Refused(f"{host} is this machine; webhooks go to public addresses ({SETTING})")
    literal = _literal(host)
    if literal is not None and not public(literal):
        raise Refused(
            f"{host} is not a public address; webhooks go to public addresses ({SETTING})"
        )
    return literal


@dataclass(frozen=True)
class Target:
    """Where to send: the URL to connect to, and what to tell the server about the host."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    extensions: dict[str, Any] = field(default_factory=dict)


def resolve(url: str) -> Target:
    """The URL pinned to a checked public address of its host; raises Refused."""
    if check_url(url) is not None:
        return Target(url)  # a public address already: nothing to resolve
    parsed = httpx.URL(url)
    host = parsed.host
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise Refused(f"cannot resolve {host}: {error}") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in found]
    if not addresses:
        raise Refused(f"cannot resolve {host}")
    blocked = [str(a) for a in addresses if not public(a)]
    if blocked:
        raise Refused(
            f"{host} resolves to a non-public address ({blocked[0]}); "
            f"webhooks go to public addresses ({SETTING})"
        )
    return pin(url, addresses[0])


def pin(url: str, address: Address) -> Target:
    """The request for `url` sent to `address`: the Host header and the TLS server name (SNI,
    and the name the certificate is checked against) stay the URL's host."""
    parsed = httpx.URL(url)
    host = parsed.host
    netloc = host if parsed.port is None else f"{host}:{parsed.port}"
    extensions = {"sni_hostname": host} if parsed.scheme == "https" else {}
    return Target(str(parsed.copy_with(host=str(address))), {"Host": netloc}, extensions)
