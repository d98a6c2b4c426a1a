"""Following the CNAME of ``_acme-challenge.<name>`` (``certreconcile.plugins.dns01.cname``) against BIND9.

``bind_delegation`` serves ``cname.test`` (only CNAMEs, no updates allowed) and
``delegated.test`` (TXT updates with TSIG): the rfc2136 provider, built by the registry as the
applier builds it, must publish at the end of each chain, wait there, and clean up there.
"""

from __future__ import annotations

import base64
import os
from datetime import timedelta
from pathlib import Path

import dns.resolver
import pytest

from certreconcile.desired import plugin_fingerprint
from certreconcile.desired.model import DnsProviderSpec
from certreconcile.errors import DnsError
from certreconcile.plugins.dns01.cname import CnameFollowingProvider, CnameResolver
from certreconcile.plugins.dns01.rfc2136_config import Rfc2136Config
from certreconcile.plugins.ports import Dns01Provider, DnsTxtRecord
from certreconcile.plugins.registry import PluginContext, create_dns_provider
from certreconcile.testing.fake_dns01 import FakeDns01Provider
from dns_extra_servers import BindDelegation
from dns_servers import BindServer

pytestmark = pytest.mark.integration

TIMEOUT = timedelta(seconds=20)


def _value() -> str:
    return base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")


def _provider(
    server: BindDelegation, tmp_path: Path, *, follow_cname: bool = True, resolvers: tuple[str, ...] | None = None
) -> Dns01Provider:
    bind = server.bind
    config = Rfc2136Config(server=bind.host_port, tsig_key_name=bind.tsig_key_name, tsig_secret_env="TSIG")
    spec = DnsProviderSpec(
        "corp-dns", "rfc2136", config, plugin_fingerprint("rfc2136", config),
        propagation_timeout=TIMEOUT, nameservers=(bind.host_port,), follow_cname=follow_cname, resolvers=resolvers,
    )  # fmt: skip
    return create_dns_provider(spec, PluginContext(tmp_path, tmp_path, {"TSIG": bind.tsig_secret}))


@pytest.mark.parametrize(
    ("label", "end"),
    [("wild", "x.delegated.test"), ("chain", "y.delegated.test")],
    ids=["one-link", "two-links"],
)
def test_the_record_is_published_waited_for_and_removed_at_the_end_of_the_chain(
    bind_delegation: BindDelegation, tmp_path: Path, label: str, end: str
) -> None:
    provider = _provider(bind_delegation, tmp_path)
    record = DnsTxtRecord(f"_acme-challenge.{label}.cname.test", _value())
    provider.present(record)
    try:
        assert bind_delegation.bind.txt_values(end) == {record.value}
        provider.wait_until_visible((record,), TIMEOUT)  # asks for the end's name, where the value is
    finally:
        provider.cleanup(record)
    assert bind_delegation.bind.txt_values(end) == set()


def test_without_follow_cname_the_alias_name_itself_is_updated(bind_delegation: BindDelegation, tmp_path: Path) -> None:
    """follow_cname: false publishes at _acme-challenge.<name>: in cname.test, which takes no update."""
    provider = _provider(bind_delegation, tmp_path, follow_cname=False)
    assert not isinstance(provider, CnameFollowingProvider)
    record = DnsTxtRecord("_acme-challenge.wild.cname.test", _value())
    with pytest.raises(DnsError) as raised:
        provider.present(record)
    assert raised.value.code == "dns-update-refused", raised.value.one_line()
    assert bind_delegation.bind.txt_values("x.delegated.test") == set()


def test_a_loop_and_a_too_long_chain_are_refused_before_anything_is_published(
    bind_delegation: BindDelegation, tmp_path: Path
) -> None:
    provider = _provider(bind_delegation, tmp_path)
    for label, words in (("loop", "loops back to"), ("long", "longer than")):
        record = DnsTxtRecord(f"_acme-challenge.{label}.cname.test", _value())
        with pytest.raises(DnsError) as raised:
            provider.present(record)
        assert raised.value.code == "dns-cname-loop"
        assert words in raised.value.message and record.fqdn in raised.value.message
    assert bind_delegation.bind.txt_values("z.delegated.test") == set()


def test_a_resolver_that_cannot_answer_is_an_error_naming_the_name(
    bind_delegation: BindDelegation, bind_server: BindServer, tmp_path: Path
) -> None:
    """A server that does not host cname.test (and does not recurse) refuses: no silent fallback."""
    provider = _provider(bind_delegation, tmp_path, resolvers=(bind_server.host_port,))
    record = DnsTxtRecord("_acme-challenge.wild.cname.test", _value())
    with pytest.raises(DnsError) as raised:
        provider.present(record)
    assert raised.value.code == "dns-cname-lookup-failed"
    assert record.fqdn in raised.value.message and "REFUSED" in raised.value.message
    assert "resolvers" in raised.value.hint
    assert bind_delegation.bind.txt_values("x.delegated.test") == set()


def test_declared_resolvers_are_asked_in_turn(bind_delegation: BindDelegation, bind_server: BindServer) -> None:
    resolver = CnameResolver((bind_server.host_port, bind_delegation.host_port))
    assert resolver.follow("_acme-challenge.chain.cname.test") == "y.delegated.test"
    assert resolver.follow("_acme-challenge.nothing.cname.test") == "_acme-challenge.nothing.cname.test"  # NXDOMAIN
    assert resolver.follow("ns1.cname.test") == "ns1.cname.test"  # a name without a CNAME


def test_a_system_style_resolver_follows_the_chain(bind_delegation: BindDelegation) -> None:
    system = dns.resolver.Resolver(configure=False)
    system.nameservers = ["127.0.0.1"]
    system.port = bind_delegation.bind.port
    resolver = CnameResolver(None, resolver=system)
    assert resolver.follow("_acme-challenge.wild.cname.test") == "x.delegated.test"
    assert resolver.follow("_acme-challenge.absent.cname.test") == "_acme-challenge.absent.cname.test"


def test_cleanup_removes_where_present_published_even_if_the_cname_changed() -> None:
    inner = FakeDns01Provider()
    ends = {"_acme-challenge.a.example": "first.example"}
    provider = CnameFollowingProvider(inner, lambda fqdn: ends.get(fqdn, fqdn))
    record = DnsTxtRecord("_acme-challenge.a.example", "v1")
    provider.present(record)
    ends["_acme-challenge.a.example"] = "second.example"  # the delegation moved meanwhile
    provider.wait_until_visible((record,), TIMEOUT)  # still where it was published
    provider.cleanup(record)
    assert inner.values("first.example") == set()
    # Once every value was cleaned up the chain is followed afresh.
    provider.present(record)
    assert inner.values("second.example") == {"v1"}
    assert provider.name == inner.name
