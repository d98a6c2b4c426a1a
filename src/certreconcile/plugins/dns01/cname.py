"""Following the CNAME chain of ``_acme-challenge.<name>`` before publishing a DNS-01 record.

A name's challenge can be delegated: ``_acme-challenge.example.com CNAME x.auth.example.net.``
(another zone, an acme-dns server). The CA follows that chain when it validates, so the TXT
record must be published at the chain's end. As lego does by default, every DNS-01 provider
built from a declaration is wrapped in :class:`CnameFollowingProvider` (unless the declaration
says ``follow_cname: false``): ``present``, ``cleanup`` and ``wait_until_visible`` receive the
record at the end of the chain, so the provider edits that zone and the propagation check asks
the authoritative servers of THAT zone.

The chain is followed one link at a time (a ``CNAME`` query per name, recursion desired)
through the declared ``resolvers``, else the declared ``nameservers``, else the system
resolver; at most :data:`MAX_LINKS` links, a loop is an error. A name without a CNAME
(NOERROR without one, or NXDOMAIN: the TXT owner need not exist yet) ends the chain; a
server that does not answer is an error naming the name, never a silent fallback.
dnspython is imported here only.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver

from certreconcile.errors import DnsError
from certreconcile.plugins.dns01.propagation import NameServer, name_server
from certreconcile.plugins.ports import Dns01Provider, DnsTxtRecord

__all__ = ["MAX_LINKS", "CnameFollowingProvider", "CnameResolver"]

#: The longest chain followed (lego stops after 50 lookups; real delegations have one or two links).
MAX_LINKS = 10
_QUERY_TIMEOUT = 3.0

log = logging.getLogger("certreconcile.dns")


def _lookup_failed(name: dns.name.Name, why: str) -> DnsError:
    return DnsError(
        f"could not follow the CNAME of {name.to_text(omit_final_dot=True)}: {why}",
        code="dns-cname-lookup-failed",
        hint="declare resolvers: [HOST:PORT] on the DNS provider that answer for every zone of the chain, "
        "or set follow_cname: false",
    )


class CnameResolver:
    """Where the CNAME of one name points: declared servers (asked in turn) or the system resolver."""

    def __init__(
        self,
        servers: tuple[str, ...] | None,
        *,
        resolver: dns.resolver.Resolver | None = None,
        timeout: float = _QUERY_TIMEOUT,
    ) -> None:
        self._declared = servers
        self._servers: tuple[NameServer, ...] | None = None
        self._resolver = resolver
        self._timeout = timeout
        self._lock = threading.Lock()

    def _name_servers(self) -> tuple[NameServer, ...]:
        assert self._declared is not None
        with self._lock:
            if self._servers is None:
                self._servers = tuple(name_server(server) for server in self._declared)
            return self._servers

    def _ask_declared(self, name: dns.name.Name) -> dns.message.Message:
        """The first usable answer (NOERROR or NXDOMAIN) of the declared servers, asked in order."""
        failures: list[str] = []
        for server in self._name_servers():
            query = dns.message.make_query(name, dns.rdatatype.CNAME)  # recursion desired
            try:
                response, _ = dns.query.udp_with_fallback(
                    query, server.address, timeout=self._timeout, port=server.port
                )
            except (dns.exception.DNSException, OSError) as exc:
                failures.append(f"{server} did not answer ({type(exc).__name__})")
                continue
            if response.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                return response
            failures.append(f"{server} answered {dns.rcode.to_text(response.rcode())}")
        raise _lookup_failed(name, "; ".join(failures) or "no server declared")

    def _ask_system(self, name: dns.name.Name) -> dns.message.Message | None:
        resolver = self._resolver or dns.resolver.get_default_resolver()
        try:
            answer = resolver.resolve(name, dns.rdatatype.CNAME, raise_on_no_answer=False, lifetime=self._timeout)
        except dns.resolver.NXDOMAIN:
            return None
        except (dns.exception.DNSException, OSError) as exc:
            raise _lookup_failed(name, f"the system resolver failed ({type(exc).__name__})") from exc
        return answer.response

    def target(self, name: dns.name.Name) -> dns.name.Name | None:
        """The CNAME target of ``name`` itself, or None when it has none."""
        response = self._ask_system(name) if self._declared is None else self._ask_declared(name)
        if response is None or response.rcode() != dns.rcode.NOERROR:
            return None
        for rrset in response.answer:
            if rrset.rdtype == dns.rdatatype.CNAME and rrset.name == name:
                for rdata in rrset:
                    target: dns.name.Name = rdata.target
                    return target
        return None

    def follow(self, fqdn: str) -> str:
        """The end of the CNAME chain starting at ``fqdn`` (``fqdn`` itself without a CNAME)."""
        start = dns.name.from_text(fqdn)
        name = start
        seen = {name}
        for _ in range(MAX_LINKS):
            following = self.target(name)
            if following is None:
                break
            if following in seen:
                raise DnsError(
                    f"the CNAME chain of {fqdn} loops back to {following.to_text(omit_final_dot=True)}",
                    code="dns-cname-loop",
                    hint="fix the CNAME records of the chain, or set follow_cname: false",
                )
            seen.add(following)
            name = following
        else:
            if self.target(name) is not None:
                raise DnsError(
                    f"the CNAME chain of {fqdn} is longer than {MAX_LINKS} links",
                    code="dns-cname-loop",
                    hint="point _acme-challenge at the zone that holds the TXT record directly",
                )
        return name.to_text(omit_final_dot=True).lower()


class CnameFollowingProvider:
    """A DNS-01 provider that publishes, waits for and removes each record at the end of its CNAME chain.

    The chain's end found at ``present`` is kept until the last value of that name is cleaned
    up, so ``cleanup`` removes what was published even if the CNAME changed meanwhile; after a
    restart the chain is followed again. Other attributes are the wrapped provider's.
    """

    def __init__(self, inner: Dns01Provider, follow: Callable[[str], str]) -> None:
        self.name = inner.name
        self.inner = inner
        self._follow = follow
        self._ends: dict[str, str] = {}  # fqdn -> the end of its chain, while values of it are presented
        self._presented: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def __getattr__(self, attribute: str) -> Any:
        if attribute == "inner":  # not set yet (copying, unpickling): never recurse
            raise AttributeError(attribute)
        return getattr(self.inner, attribute)

    def _end(self, fqdn: str) -> str:
        with self._lock:
            known = self._ends.get(fqdn)
        if known is not None:
            return known
        end = self._follow(fqdn)
        if end != fqdn:
            log.info("DNS-01 record %s follows its CNAME to %s", fqdn, end)
        return end

    def _at_end(self, record: DnsTxtRecord) -> DnsTxtRecord:
        end = self._end(record.fqdn)
        return record if end == record.fqdn else DnsTxtRecord(end, record.value)

    def present(self, record: DnsTxtRecord) -> None:
        target = self._at_end(record)
        self.inner.present(target)
        with self._lock:
            self._ends[record.fqdn] = target.fqdn
            self._presented.setdefault(record.fqdn, set()).add(record.value)

    def cleanup(self, record: DnsTxtRecord) -> None:
        self.inner.cleanup(self._at_end(record))
        with self._lock:
            values = self._presented.get(record.fqdn)
            if values is not None:
                values.discard(record.value)
                if not values:
                    del self._presented[record.fqdn]
                    self._ends.pop(record.fqdn, None)

    def wait_until_visible(self, records: tuple[DnsTxtRecord, ...], timeout: timedelta) -> None:
        self.inner.wait_until_visible(tuple(self._at_end(record) for record in records), timeout)
