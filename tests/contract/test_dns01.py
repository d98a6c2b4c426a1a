"""Every DNS-01 provider and the fake pass the same contract (``certreconcile.testing.dns01_contract``).

rfc2136: BIND9 (``bind_server``), records read back from BIND itself; route53: ``moto_server``
(``moto_route53``), records read with boto3; cloudflare: the API test server of
``tests/dns_servers.py`` over HTTPS (``cloudflare_api``), which also publishes to BIND, so its
propagation check is real; fake: :class:`~certreconcile.testing.fake_dns01.FakeDns01Provider`.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from datetime import timedelta

import pytest

from certreconcile.plugins.dns01.cloudflare import CloudflareProvider
from certreconcile.plugins.dns01.cloudflare_config import CloudflareConfig
from certreconcile.plugins.dns01.propagation import PropagationWaiter
from certreconcile.plugins.dns01.rfc2136 import Rfc2136Provider
from certreconcile.plugins.dns01.rfc2136_config import Rfc2136Config
from certreconcile.plugins.dns01.route53 import Route53Provider
from certreconcile.plugins.dns01.route53_config import Route53Config
from certreconcile.testing.dns01_contract import CHECKS, Dns01Backend, new_record
from certreconcile.testing.fake_dns01 import FakeDns01Provider
from dns_servers import BindServer, CloudflareApi, MotoRoute53

BACKENDS = ["fake", "rfc2136", "route53", "cloudflare"]
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


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Dns01Backend:
    match request.param:
        case "fake":
            fake = FakeDns01Provider()
            return Dns01Backend(
                make_provider=lambda: fake,  # its memory is the zone: one instance per test
                published=fake.values,
                zone="fake.test",
                make_unauthorized=lambda: FakeDns01Provider(authorized=False),
            )
        case "rfc2136":
            return _rfc2136(request.getfixturevalue("bind_server"))
        case "route53":
            return _route53(request.getfixturevalue("moto_route53"))
        case "cloudflare":
            return _cloudflare(request.getfixturevalue("cloudflare_api"), request.getfixturevalue("bind_server"))
    raise AssertionError(request.param)


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
