"""The propagation waiter and zone discovery, against a real BIND (``bind_server``)."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import dns.resolver
import pytest

from certreconcile.errors import DnsError
from certreconcile.plugins.dns01.propagation import (
    NameServer,
    PropagationWaiter,
    discover_authoritative_servers,
    find_zone,
    name_server,
    txt_values_at,
)
from certreconcile.testing.dns01_contract import new_record
from dns_servers import BindServer, free_dual_port


def _resolver_at(bind: BindServer) -> dns.resolver.Resolver:
    """A stub resolver asking BIND only (BIND is authoritative, so answers come straight from the zone)."""
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = [bind.address]
    resolver.port = bind.port
    resolver.lifetime = 5
    return resolver


def test_present_record_returns(bind_server: BindServer) -> None:
    record = new_record(bind_server.zone)
    bind_server.update_txt(record.fqdn, record.value, add=True)
    waiter = PropagationWaiter((bind_server.host_port,), timedelta(seconds=10))
    started = time.monotonic()
    waiter.wait((record,), timedelta(seconds=10))
    assert time.monotonic() - started < 2


def test_absent_record_times_out_naming_the_server(bind_server: BindServer) -> None:
    record = new_record(bind_server.zone)
    waiter = PropagationWaiter((bind_server.host_port,), timedelta(seconds=10))
    started = time.monotonic()
    with pytest.raises(DnsError) as raised:
        waiter.wait((record,), timedelta(seconds=1))
    elapsed = time.monotonic() - started
    assert 1 <= elapsed < 4, elapsed
    error = raised.value
    assert error.code == "dns-propagation-timeout"
    assert bind_server.host_port in error.message
    assert record.fqdn in error.message
    assert "\n" not in error.one_line()


def test_the_declared_maximum_caps_the_callers_timeout(bind_server: BindServer) -> None:
    record = new_record(bind_server.zone)
    waiter = PropagationWaiter((bind_server.host_port,), timedelta(seconds=1))
    started = time.monotonic()
    with pytest.raises(DnsError, match="after 1s"):
        waiter.wait((record,), timedelta(minutes=5))
    assert time.monotonic() - started < 4


def test_record_appearing_while_polling_is_seen(bind_server: BindServer) -> None:
    record = new_record(bind_server.zone)
    timer = threading.Timer(0.7, bind_server.update_txt, args=(record.fqdn, record.value), kwargs={"add": True})
    timer.start()
    try:
        PropagationWaiter((bind_server.host_port,), timedelta(seconds=10)).wait((record,), timedelta(seconds=10))
    finally:
        timer.join()
    assert record.value in bind_server.txt_values(record.fqdn)


def test_every_server_must_answer_and_the_silent_one_is_named(bind_server: BindServer) -> None:
    record = new_record(bind_server.zone)
    bind_server.update_txt(record.fqdn, record.value, add=True)
    silent = f"127.0.0.1:{free_dual_port()}"  # nothing listens there
    waiter = PropagationWaiter((bind_server.host_port, silent), timedelta(seconds=10))
    with pytest.raises(DnsError) as raised:
        waiter.wait((record,), timedelta(seconds=1))
    assert silent in raised.value.message
    assert "did not answer" in raised.value.message
    assert bind_server.host_port not in raised.value.message  # BIND answered


def test_txt_values_at_reads_every_value_and_nothing_for_nxdomain(bind_server: BindServer) -> None:
    record = new_record(bind_server.zone)
    server = name_server(bind_server.host_port)
    assert txt_values_at(record.fqdn, server) == frozenset()
    bind_server.update_txt(record.fqdn, "one", add=True)
    bind_server.update_txt(record.fqdn, "two", add=True)
    assert txt_values_at(record.fqdn, server) == {"one", "two"}


def test_find_zone_by_soa_at_the_server(bind_server: BindServer) -> None:
    server = name_server(bind_server.host_port)
    assert find_zone(f"_acme-challenge.a.b.{bind_server.zone}", server) == bind_server.zone
    assert find_zone(bind_server.zone, server) == bind_server.zone
    with pytest.raises(DnsError) as raised:
        find_zone("_acme-challenge.example.org", server)  # BIND refuses: not its zone
    assert raised.value.code == "dns-zone-not-found"


def test_discover_authoritative_servers_through_a_resolver(bind_server: BindServer) -> None:
    zone, servers = discover_authoritative_servers(
        f"_acme-challenge.www.{bind_server.zone}", _resolver_at(bind_server), port=bind_server.port
    )
    assert zone == bind_server.zone
    label = f"ns1.{bind_server.zone} (127.0.0.1:{bind_server.port})"
    assert servers == (NameServer("127.0.0.1", bind_server.port, label),)


def test_waiter_without_declared_servers_discovers_them(bind_server: BindServer) -> None:
    present, absent = new_record(bind_server.zone), new_record(bind_server.zone)
    bind_server.update_txt(present.fqdn, present.value, add=True)
    waiter = PropagationWaiter(
        None, timedelta(seconds=10), resolver=_resolver_at(bind_server), discovery_port=bind_server.port
    )
    assert not waiter.declared
    waiter.wait((present,), timedelta(seconds=10))
    with pytest.raises(DnsError) as raised:
        waiter.wait((absent,), timedelta(seconds=1))
    assert f"ns1.{bind_server.zone}" in raised.value.message


def test_discovery_failure_is_a_dns_error(bind_server: BindServer) -> None:
    resolver = dns.resolver.Resolver(configure=False)
    resolver.nameservers = ["127.0.0.1"]
    resolver.port = free_dual_port()  # nobody answers
    resolver.lifetime = 0.5
    with pytest.raises(DnsError) as raised:
        discover_authoritative_servers(f"x.{bind_server.zone}", resolver)
    assert raised.value.code == "dns-zone-not-found"
    assert "nameservers" in raised.value.hint
