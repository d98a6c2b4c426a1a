"""Waiting until the authoritative name servers answer a DNS-01 TXT value.

A CA validates against the authoritative servers of the record's zone, any of them; so
before the challenge is answered, EVERY one of them must serve the value. The servers are
either declared (``nameservers: [HOST:PORT, ...]``, queried exactly) or discovered: the
zone through SOA lookups of the system resolver, its NS records, their addresses, port 53.

Queries are non-recursive (RD clear), UDP with a TCP fallback on truncation, polled with
short growing intervals until the deadline. dnspython is imported here only.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from certreconcile.errors import DnsError
from certreconcile.plugins.ports import DnsTxtRecord

__all__ = [
    "NameServer",
    "PropagationWaiter",
    "discover_authoritative_servers",
    "find_zone",
    "name_server",
    "txt_values_at",
]

_FIRST_INTERVAL = 0.05  # seconds; doubled after each round, up to _MAX_INTERVAL
_MAX_INTERVAL = 2.0
_QUERY_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class NameServer:
    address: str  # an IP address, never a host name
    port: int
    label: str  # how messages name it, e.g. "ns1.example.com (192.0.2.1:53)"

    def __str__(self) -> str:
        return self.label


def _split_host_port(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise DnsError(f"{text!r} is not HOST:PORT", code="dns-config-invalid", hint="write e.g. 127.0.0.1:53")
    return host.strip("[]"), int(port)


def resolve_address(host: str) -> str:
    """``host`` when it is an IP address, else its first address from the system resolver."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_UDP)
    except OSError as exc:
        raise DnsError(f"the name server {host} has no address", code="dns-server-unknown") from exc
    return str(infos[0][4][0])


def name_server(host_port: str) -> NameServer:
    """A declared ``HOST:PORT`` (the host resolved once, here)."""
    host, port = _split_host_port(host_port)
    address = resolve_address(host)
    label = host_port if address == host else f"{host_port} ({address})"
    return NameServer(address, port, label)


def _query(
    name: dns.name.Name, rdtype: dns.rdatatype.RdataType, server: NameServer, timeout: float
) -> dns.message.Message:
    query = dns.message.make_query(name, rdtype)
    query.flags &= ~dns.flags.RD  # ask the server itself, not whoever it would recurse to
    response, _ = dns.query.udp_with_fallback(query, server.address, timeout=timeout, port=server.port)
    return response


def find_zone(fqdn: str, server: NameServer, timeout: float = 5.0) -> str:
    """The zone holding ``fqdn`` on the authoritative ``server``, by SOA queries walking up the name."""
    name = dns.name.from_text(fqdn)
    while True:
        try:
            response = _query(name, dns.rdatatype.SOA, server, timeout)
        except (dns.exception.DNSException, OSError) as exc:
            raise DnsError(
                f"the name server {server} did not answer the SOA query for {name.to_text(omit_final_dot=True)} "
                f"({type(exc).__name__})",
                code="dns-server-unreachable",
                hint="check the server address and that it runs",
            ) from exc
        if response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            for rrset in response.answer:
                if rrset.rdtype == dns.rdatatype.SOA and rrset.name == name:
                    return name.to_text(omit_final_dot=True)
            for rrset in response.authority:
                if rrset.rdtype == dns.rdatatype.SOA and name.is_subdomain(rrset.name):
                    return rrset.name.to_text(omit_final_dot=True)
        if name == dns.name.root or len(name) <= 1:
            break
        name = name.parent()
    raise DnsError(
        f"the name server {server} is authoritative for no zone holding {fqdn}",
        code="dns-zone-not-found",
        hint="set the zone in the provider's configuration, or check the server",
    )


def discover_authoritative_servers(
    fqdn: str, resolver: dns.resolver.Resolver | None = None, port: int = 53
) -> tuple[str, tuple[NameServer, ...]]:
    """The zone of ``fqdn`` and the addresses of its NS records, through ``resolver`` (default: the system's)."""
    resolver = resolver or dns.resolver.get_default_resolver()
    try:
        zone = dns.resolver.zone_for_name(fqdn, resolver=resolver)
        hosts = sorted(str(rdata.target) for rdata in resolver.resolve(zone, dns.rdatatype.NS))
    except (dns.exception.DNSException, OSError) as exc:
        raise DnsError(
            f"the zone of {fqdn} or its name servers could not be found ({type(exc).__name__})",
            code="dns-zone-not-found",
            hint="check the system resolver, or declare nameservers: [HOST:PORT] on the provider",
        ) from exc
    servers: list[NameServer] = []
    for host in hosts:
        for rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
            try:
                answer = resolver.resolve(host, rdtype)
            except (dns.exception.DNSException, OSError):
                continue
            for rdata in answer:
                address = str(rdata.address)
                servers.append(NameServer(address, port, f"{host.rstrip('.')} ({address}:{port})"))
    if not servers:
        raise DnsError(
            f"no address found for the name servers of {zone.to_text(omit_final_dot=True)}",
            code="dns-zone-not-found",
            hint="declare nameservers: [HOST:PORT] on the provider",
        )
    return zone.to_text(omit_final_dot=True), tuple(servers)


def txt_values_at(fqdn: str, server: NameServer, timeout: float = _QUERY_TIMEOUT) -> frozenset[str]:
    """The TXT values ``server`` itself answers for ``fqdn`` (empty for NXDOMAIN or no data).

    Raises DnsError when the server does not answer or answers with an error.
    """
    name = dns.name.from_text(fqdn)
    try:
        response = _query(name, dns.rdatatype.TXT, server, timeout)
    except (dns.exception.DNSException, OSError) as exc:
        raise DnsError(f"{server} did not answer ({type(exc).__name__})", code="dns-server-unreachable") from exc
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return frozenset()
    if rcode != dns.rcode.NOERROR:
        raise DnsError(f"{server} answered {dns.rcode.to_text(rcode)}", code="dns-server-refused")
    values: set[str] = set()
    for rrset in response.answer:
        if rrset.rdtype == dns.rdatatype.TXT and rrset.name == name:
            for rdata in rrset:
                values.add(b"".join(rdata.strings).decode(errors="replace"))
    return frozenset(values)


class PropagationWaiter:
    """Polls the authoritative servers of each record until all answer its value, or the deadline passes."""

    def __init__(
        self,
        nameservers: tuple[str, ...] | None,
        max_timeout: timedelta,
        *,
        resolver: dns.resolver.Resolver | None = None,
        discovery_port: int = 53,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._declared = nameservers
        self._max_timeout = max_timeout
        self._resolver = resolver
        self._discovery_port = discovery_port
        self._sleep = sleep
        self._monotonic = monotonic

    @property
    def declared(self) -> bool:
        """Whether name servers were declared (else they are discovered)."""
        return self._declared is not None

    def _servers(self, fqdn: str) -> tuple[NameServer, ...]:
        if self._declared is not None:
            return tuple(name_server(server) for server in self._declared)
        return discover_authoritative_servers(fqdn, self._resolver, self._discovery_port)[1]

    def wait(self, records: Iterable[DnsTxtRecord], timeout: timedelta) -> None:
        """Return once every server answers every value; DnsError naming a server that did not, at the deadline."""
        budget = min(timeout, self._max_timeout).total_seconds()
        deadline = self._monotonic() + budget
        pending: dict[tuple[DnsTxtRecord, NameServer], str] = {}
        for record in dict.fromkeys(records):
            for server in self._servers(record.fqdn):
                pending[(record, server)] = "was not asked"
        interval = _FIRST_INTERVAL
        while pending:
            for (record, server) in list(pending):
                remaining = deadline - self._monotonic()
                try:
                    values = txt_values_at(record.fqdn, server, max(0.2, min(_QUERY_TIMEOUT, remaining)))
                except DnsError as error:
                    pending[(record, server)] = error.message.removeprefix(f"{server} ")
                    continue
                if record.value in values:
                    del pending[(record, server)]
                else:
                    pending[(record, server)] = "answered without the value"
            if not pending:
                return
            remaining = deadline - self._monotonic()
            if remaining <= 0:
                (record, server), status = next(iter(pending.items()))
                others = f" (and {len(pending) - 1} more)" if len(pending) > 1 else ""
                raise DnsError(
                    f"the TXT record {record.fqdn} is not visible at the name server {server} after "
                    f"{budget:g}s: it {status}{others}",
                    code="dns-propagation-timeout",
                    hint="check that the provider publishes to that server; raise propagation_timeout if it is slow",
                )
            self._sleep(min(interval, remaining))
            interval = min(interval * 2, _MAX_INTERVAL)
