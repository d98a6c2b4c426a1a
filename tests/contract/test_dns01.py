"""Every DNS-01 provider and the fake pass the same contract (``certreconcile.testing.dns01_contract``).

rfc2136: BIND9 (``bind_server``), records read back from BIND itself; route53: ``moto_server``
(``moto_route53``), records read with boto3; cloudflare: the API test server of
``tests/dns_servers.py`` over HTTPS (``cloudflare_api``), which also publishes to BIND, so its
propagation check is real; lexicon: dns-lexicon's ``powerdns`` provider against a real PowerDNS
(``powerdns``), records read over DNS from PowerDNS; exec: a lego-style hook script
(``examples/dns01/lego-nsupdate.sh``, nsupdate) against BIND; rfc2136-registry: the rfc2136
kind as the registry builds it, wrapped to follow CNAMEs (none here: the wrapper passes the
records through); fake: :class:`~certreconcile.testing.fake_dns01.FakeDns01Provider`.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from certreconcile.plugins.dns01.cloudflare import CloudflareProvider
from certreconcile.plugins.dns01.cloudflare_config import CloudflareConfig
from certreconcile.plugins.dns01.exec_config import ExecConfig
from certreconcile.plugins.dns01.exec_program import ExecProvider
from certreconcile.plugins.dns01.lexicon_config import LexiconConfig
from certreconcile.plugins.dns01.lexicon_provider import LexiconProvider
from certreconcile.plugins.dns01.propagation import PropagationWaiter
from certreconcile.plugins.dns01.rfc2136 import Rfc2136Provider
from certreconcile.plugins.dns01.rfc2136_config import Rfc2136Config
from certreconcile.plugins.dns01.route53 import Route53Provider
from certreconcile.plugins.dns01.route53_config import Route53Config
from certreconcile.plugins.ports import Dns01Provider
from certreconcile.testing.dns01_contract import CHECKS, Dns01Backend, new_record
from certreconcile.testing.fake_dns01 import FakeDns01Provider
from dns_extra_servers import PowerDns
from dns_servers import BindServer, CloudflareApi, MotoRoute53
from helpers import require_binary

BACKENDS = ["fake", "rfc2136", "route53", "cloudflare", "lexicon", "exec", "rfc2136-registry"]
HOOK = Path(__file__).resolve().parents[2] / "examples" / "dns01" / "lego-nsupdate.sh"
TIMEOUT = timedelta(seconds=30)


def _rfc2136(bind: BindServer) -> Dns01Backend:
    wrong_secret = base64.b64encode(os.urandom(32)).decode()

    def make(secret: str) -> Rfc2136Provider:
        config = Rfc2136Config(
            server=bind.host_port, tsig_key_name=bind.tsig_key_name, tsig_secret_env="CORP_TSIG"
        )
        waiter = PropagationWaiter((bind.host_port,), TIMEOUT)
        return Rfc2136Provider("corp-dns", config, env={"CORP_TSIG": secret}, propagation=waiter)

    return Dns01Backend(
        make_provider=lambda: make(bind.tsig_secret),
        published=bind.txt_values,
        zone=bind.zone,
        make_unauthorized=lambda: make(wrong_secret),
        secrets=(bind.tsig_secret, wrong_secret),
    )


def _route53(server: MotoRoute53) -> Dns01Backend:
    def make(env: dict[str, str]) -> Route53Provider:
        config = Route53Config(hosted_zone_id=server.hosted_zone_id, endpoint_url=server.endpoint_url)
        return Route53Provider("aws-dns", config, env=env, propagation=None, max_timeout=TIMEOUT)

    return Dns01Backend(
        make_provider=lambda: make(server.env),
        published=server.txt_values,
        zone=server.zone,
        # moto does not check signatures: a missing profile is the credential failure it can show
        make_unauthorized=lambda: make({"AWS_PROFILE": "certreconcile-no-such-profile"}),
        secrets=(server.env["AWS_SECRET_ACCESS_KEY"],),
    )


def _cloudflare(api: CloudflareApi, bind: BindServer) -> Dns01Backend:
    wrong_token = "cf-wrong-" + base64.urlsafe_b64encode(os.urandom(18)).decode()

    def make(token: str) -> CloudflareProvider:
        config = CloudflareConfig(api_token_env="CF_TOKEN", api_base=api.api_base)  # zone found by name
        waiter = PropagationWaiter((bind.host_port,), TIMEOUT)
        return CloudflareProvider(
            "cf-dns", config, env={"CF_TOKEN": token}, propagation=waiter, ca_bundle=api.ca_bundle
        )

    return Dns01Backend(
        make_provider=lambda: make(api.token),
        published=api.txt_values,
        zone=api.zone,
        make_unauthorized=lambda: make(wrong_token),
        secrets=(api.token, wrong_token),
    )


def _lexicon(pdns: PowerDns) -> Dns01Backend:
    wrong_key = "pdns-wrong-" + base64.urlsafe_b64encode(os.urandom(18)).decode()

    def make(key: str) -> LexiconProvider:
        config = LexiconConfig(
            provider="powerdns",
            options={"pdns_server": pdns.api_url},
            credentials_env={"auth_token": "PDNS_API_KEY"},
        )  # the zone is found by SOA queries to the declared name server
        waiter = PropagationWaiter((pdns.host_port,), TIMEOUT)
        return LexiconProvider(
            "pdns", config, env={"PDNS_API_KEY": key}, propagation=waiter, nameservers=(pdns.host_port,)
        )

    return Dns01Backend(
        make_provider=lambda: make(pdns.api_key),
        published=pdns.txt_values,
        zone=pdns.zone,
        make_unauthorized=lambda: make(wrong_key),
        secrets=(pdns.api_key, wrong_key),
    )


def _exec(bind: BindServer) -> Dns01Backend:
    require_binary("nsupdate")
    wrong_secret = base64.b64encode(os.urandom(32)).decode()

    def make(secret: str) -> ExecProvider:
        config = ExecConfig(
            program=str(HOOK),
            env={"NSUPDATE_SERVER": bind.address, "NSUPDATE_PORT": str(bind.port),
                 "NSUPDATE_KEY_NAME": bind.tsig_key_name},
            pass_env=("NSUPDATE_TSIG_SECRET",),
        )  # fmt: skip
        waiter = PropagationWaiter((bind.host_port,), TIMEOUT)
        env = {"PATH": os.environ["PATH"], "NSUPDATE_TSIG_SECRET": secret}
        return ExecProvider("hook", config, program=HOOK, env=env, propagation=waiter, propagation_timeout=TIMEOUT)

    return Dns01Backend(
        make_provider=lambda: make(bind.tsig_secret),
        published=bind.txt_values,
        zone=bind.zone,
        make_unauthorized=lambda: make(wrong_secret),
        secrets=(bind.tsig_secret, wrong_secret),
    )


def _rfc2136_registry(bind: BindServer, tmp_path: Path) -> Dns01Backend:
    from certreconcile.desired import plugin_fingerprint
    from certreconcile.desired.model import DnsProviderSpec
    from certreconcile.plugins.registry import PluginContext, create_dns_provider

    wrong_secret = base64.b64encode(os.urandom(32)).decode()
    config = Rfc2136Config(server=bind.host_port, tsig_key_name=bind.tsig_key_name, tsig_secret_env="CORP_TSIG")
    spec = DnsProviderSpec(
        "corp-dns", "rfc2136", config, plugin_fingerprint("rfc2136", config),
        propagation_timeout=TIMEOUT, nameservers=(bind.host_port,),
    )  # fmt: skip

    def make(secret: str) -> Dns01Provider:
        return create_dns_provider(spec, PluginContext(tmp_path, tmp_path, {"CORP_TSIG": secret}))

    return Dns01Backend(
        make_provider=lambda: make(bind.tsig_secret),
        published=bind.txt_values,
        zone=bind.zone,
        make_unauthorized=lambda: make(wrong_secret),
        secrets=(bind.tsig_secret, wrong_secret),
    )


def _fake() -> Dns01Backend:
    fake = FakeDns01Provider()
    return Dns01Backend(
        make_provider=lambda: fake,  # its memory is the zone: one instance per test
        published=fake.values,
        zone="fake.test",
        make_unauthorized=lambda: FakeDns01Provider(authorized=False),
    )


# backend name -> (its factory, the fixtures it takes)
_BACKENDS: dict[str, tuple[Callable[..., Dns01Backend], tuple[str, ...]]] = {
    "fake": (_fake, ()),
    "rfc2136": (_rfc2136, ("bind_server",)),
    "route53": (_route53, ("moto_route53",)),
    "cloudflare": (_cloudflare, ("cloudflare_api", "bind_server")),
    "lexicon": (_lexicon, ("powerdns",)),
    "exec": (_exec, ("bind_server",)),
    "rfc2136-registry": (_rfc2136_registry, ("bind_server", "tmp_path")),
}
assert list(_BACKENDS) == BACKENDS


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Dns01Backend:
    factory, fixtures = _BACKENDS[request.param]
    return factory(*(request.getfixturevalue(name) for name in fixtures))


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__.removeprefix("check_"))
def test_dns01_contract(backend: Dns01Backend, check: Callable[[Dns01Backend], None]) -> None:
    check(backend)


# ---------------------------------------------------------------- provider specifics


def test_cloudflare_finds_the_zone_by_walking_up_and_sends_the_token(
    cloudflare_api: CloudflareApi, bind_server: BindServer
) -> None:
    backend = _cloudflare(cloudflare_api, bind_server)
    provider = backend.make_provider()
    record = new_record(cloudflare_api.zone)
    provider.present(record)
    zone_lookups = [line for line in cloudflare_api.state.requests if line.startswith("GET /client/v4/zones?")]
    # _acme-challenge.<label>.<zone>, then <label>.<zone>, then the zone itself, which exists
    assert len(zone_lookups) == 3, zone_lookups
    assert zone_lookups[-1].endswith(f"name={cloudflare_api.zone}")
    assert f"POST /client/v4/zones/{cloudflare_api.zone_id}/dns_records" in cloudflare_api.state.requests
    assert bind_server.txt_values(record.fqdn) == {record.value}  # the test server published it
    provider.cleanup(record)
    assert cloudflare_api.txt_values(record.fqdn) == set()


def _raw_txt(server: MotoRoute53, fqdn: str) -> list[str]:
    sets = server.client().list_resource_record_sets(
        HostedZoneId=server.hosted_zone_id, StartRecordName=fqdn, StartRecordType="TXT", MaxItems="1"
    )["ResourceRecordSets"]
    return sorted(item["Value"] for rs in sets if rs["Name"] == fqdn + "." for item in rs["ResourceRecords"])


def test_route53_keeps_values_written_by_others_exactly(moto_route53: MotoRoute53) -> None:
    """A value another client wrote (here split in two strings) survives our present and cleanup unchanged."""
    record = new_record(moto_route53.zone)
    foreign = '"written-by" "someone-else"'
    moto_route53.client().change_resource_record_sets(
        HostedZoneId=moto_route53.hosted_zone_id,
        ChangeBatch={
            "Changes": [
                {
                    "Action": "CREATE",
                    "ResourceRecordSet": {
                        "Name": record.fqdn + ".",
                        "Type": "TXT",
                        "TTL": 300,
                        "ResourceRecords": [{"Value": foreign}],
                    },
                }
            ]
        },
    )
    provider = _route53(moto_route53).make_provider()
    provider.present(record)
    assert _raw_txt(moto_route53, record.fqdn) == sorted([foreign, f'"{record.value}"'])
    provider.wait_until_visible((record,), TIMEOUT)
    provider.cleanup(record)
    assert _raw_txt(moto_route53, record.fqdn) == [foreign]


# ---------------------------------------------------------------- check() (certreconcile check)


@pytest.mark.parametrize("kind", ["rfc2136", "route53", "cloudflare"])
def test_check_accepts_good_credentials_and_refuses_bad_ones(kind: str, request: pytest.FixtureRequest) -> None:
    from certreconcile.errors import DnsError

    match kind:
        case "rfc2136":
            backend = _rfc2136(request.getfixturevalue("bind_server"))
        case "route53":
            backend = _route53(request.getfixturevalue("moto_route53"))
        case _:
            backend = _cloudflare(request.getfixturevalue("cloudflare_api"), request.getfixturevalue("bind_server"))
    provider = backend.make_provider()
    assert provider.check()  # type: ignore[attr-defined]
    with pytest.raises(DnsError) as refused:
        backend.make_unauthorized().check()  # type: ignore[attr-defined]
    assert refused.value.code in ("dns-auth-failed", "dns-credentials-missing", "dns-provider-error")
    assert not any(secret in refused.value.one_line() for secret in backend.secrets)
