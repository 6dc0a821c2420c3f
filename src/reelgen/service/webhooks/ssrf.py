"""Which webhook URLs the service may call: http(s) only, and only public addresses unless allow-listed.

Checked twice: when a request names a URL (a clear 400), and before every attempt on the addresses the
host resolves to then, since DNS may have changed; the attempt connects to the address that was checked.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], list[str]]

SCHEMES = {"http": 80, "https": 443}


class BlockedURL(ValueError):
    """A URL the service refuses to call, with the reason a user can act on."""


def resolve(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (an IP literal resolves to itself, without DNS)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as e:
        raise BlockedURL(f"the host '{host}' does not resolve ({e.strerror})") from e
    return list(dict.fromkeys(info[4][0] for info in infos))


def address_class(address: IPAddress) -> str | None:
    """Why an address is not one a webhook may reach, None if it is public."""
    # Python's is_global is False for all the special-purpose ranges except multicast, so that is named first
    for name in ("unspecified", "loopback", "link_local", "multicast", "private", "reserved"):
        if getattr(address, f"is_{name}"):
            return name.replace("_", "-")
    return None if address.is_global else "non-public"


@dataclass(frozen=True)
class AllowList:
    """Hosts (any address they resolve to) and networks that webhooks (or image fetches) may reach even though
    they are not public."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(default=())

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AllowList:
        hosts, networks = set(), []
        for entry in (e.strip() for e in entries):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                if "/" in entry or ":" in entry or not all(part for part in entry.split(".")):
                    raise ValueError(f"allow-list entry '{entry}' is neither a CIDR, an IP nor a host name")
                hosts.add(entry.lower().rstrip("."))
        return cls(frozenset(hosts), tuple(networks))

    def allows(self, host: str, address: IPAddress) -> bool:
        return host.lower().rstrip(".") in self.hosts or any(address in network for network in self.networks)


@dataclass(frozen=True)
class Target:
    """A checked URL and the address to connect to."""

    url: str
    host: str
    port: int
    address: str


def parse_url(url: str) -> tuple[str, int]:
    """(host, port) of an http(s) URL, or BlockedURL saying what is wrong with it; resolves nothing."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise BlockedURL(f"it is not a valid URL ({e})") from e
    if parts.scheme not in SCHEMES:
        raise BlockedURL("only http and https URLs can receive webhooks")
    if not parts.hostname:
        raise BlockedURL("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise BlockedURL("credentials in the URL are not allowed; receivers authenticate us by the signature")
    return parts.hostname, port or SCHEMES[parts.scheme]


def check_url(url: str, allow: AllowList, resolver: Resolver = resolve) -> Target:
    """The URL resolved and checked, or BlockedURL saying why not."""
    host, port = parse_url(url)
    addresses = resolver(host, port)
    if not addresses:
        raise BlockedURL(f"the host '{host}' does not resolve")
    for text in addresses:
        address = ipaddress.ip_address(text.split("%")[0])  # drop an IPv6 zone id
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        kind = address_class(address)
        # every address must pass: a client could otherwise reach a private one through a mixed DNS answer
        if kind is not None and not allow.allows(host, address):
            article = "an" if kind[0] in "aeiou" else "a"
            raise BlockedURL(f"'{host}' resolves to {address}, {article} {kind} address; only public addresses "
                             "(or those in REELGEN_WEBHOOK_ALLOW_HOSTS) can receive webhooks")
    return Target(url=url, host=host, port=port, address=addresses[0])
