"""dns_providers: the three kinds, the common propagation keys, their validation and the frozen spec."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from certreconcile.desired import load_desired, validate_directory
from certreconcile.desired.model import DnsProviderSpec
from certreconcile.plugins.dns01.cloudflare_config import CloudflareConfig
from certreconcile.plugins.dns01.rfc2136_config import Rfc2136Config
from certreconcile.plugins.dns01.route53_config import Route53Config

PROVIDERS = """\
dns_providers:
  corp:
    rfc2136: {server: "127.0.0.1:5353", tsig_key_name: k, tsig_secret_env: CORP_TSIG, zone: example.com}
    propagation_timeout: 30s
    nameservers: ["127.0.0.1:5353", "[::1]:53"]
  aws:
    route53: {hosted_zone_id: Z123}
  cf:
    cloudflare: {api_token_env: CF_TOKEN}
"""


def test_every_kind_loads_with_its_propagation_settings(tmp_path: Path) -> None:
    (tmp_path / "dns.yaml").write_text(PROVIDERS)
    state = load_desired(tmp_path)
    corp, aws, cf = (state.dns_providers[name] for name in ("corp", "aws", "cf"))
    assert all(isinstance(spec, DnsProviderSpec) for spec in (corp, aws, cf))
    assert isinstance(corp, DnsProviderSpec)
    assert isinstance(aws, DnsProviderSpec)
    assert isinstance(cf, DnsProviderSpec)
    assert (corp.kind, aws.kind, cf.kind) == ("rfc2136", "route53", "cloudflare")
    assert isinstance(corp.config, Rfc2136Config)
    assert corp.config.zone == "example.com"
    assert corp.propagation_timeout == timedelta(seconds=30)
    assert corp.nameservers == ("127.0.0.1:5353", "[::1]:53")
    assert isinstance(aws.config, Route53Config)
    assert aws.config.hosted_zone_id == "Z123"
    assert aws.propagation_timeout == timedelta(seconds=120)  # the default
    assert aws.nameservers is None
    assert isinstance(cf.config, CloudflareConfig)
    assert cf.config.api_base == "https://api.cloudflare.com/client/v4"


def test_propagation_settings_change_the_digest(tmp_path: Path) -> None:
    (tmp_path / "dns.yaml").write_text(PROVIDERS)
    before = load_desired(tmp_path).digest
    (tmp_path / "dns.yaml").write_text(PROVIDERS.replace("propagation_timeout: 30s", "propagation_timeout: 31s"))
    assert load_desired(tmp_path).digest != before


@pytest.mark.parametrize(
    ("entry", "codes"),
    [
        pytest.param("{route53: {}, propagation_timeout: 0s}", ["invalid-duration"], id="zero-timeout"),
        pytest.param("{route53: {}, propagation_timeout: soon}", ["schema-invalid-value"], id="timeout-pattern"),
        pytest.param("{route53: {}, nameservers: ['127.0.0.1:70000']}", ["invalid-port"], id="nameserver-port"),
        pytest.param("{route53: {}, nameservers: [ns1.example.com]}", ["schema-invalid-value"],
                     id="nameserver-without-port"),
        pytest.param("{cloudflare: {api_token_env: 'not a name'}}", ["schema-invalid-value"], id="token-env-name"),
        pytest.param("{route53: {}, cloudflare: {}}", ["schema-multiple-kinds"], id="two-kinds"),
        pytest.param("{route53: {}, nameservers: null}", [], id="nameservers-null"),
    ],
)
def test_invalid_entries(tmp_path: Path, entry: str, codes: list[str]) -> None:
    (tmp_path / "dns.yaml").write_text(f"dns_providers:\n  p: {entry}\n")
    assert [d.code for d in validate_directory(tmp_path)] == codes
