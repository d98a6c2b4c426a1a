"""What the contract suite does not cover: secrets from the environment, error mapping, factories."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import httpx
import pytest

from certreconcile.desired import plugin_fingerprint
from certreconcile.desired.model import DnsProviderSpec, PluginSpec
from certreconcile.errors import DnsError
from certreconcile.plugins.dns01.cloudflare import CloudflareProvider
from certreconcile.plugins.dns01.cloudflare_config import CloudflareConfig
from certreconcile.plugins.dns01.cname import CnameFollowingProvider
from certreconcile.plugins.dns01.propagation import PropagationWaiter
from certreconcile.plugins.dns01.rfc2136 import Rfc2136Provider
from certreconcile.plugins.dns01.rfc2136_config import Rfc2136Config
from certreconcile.plugins.dns01.route53 import Route53Provider, quote_txt, unquote_txt
from certreconcile.plugins.dns01.route53_config import Route53Config
from certreconcile.plugins.ports import DnsTxtRecord
from certreconcile.plugins.registry import PluginContext, available_kinds, create_dns_provider
from certreconcile.testing.dns01_contract import new_record
from dns_servers import BindServer, free_dual_port

RECORD = DnsTxtRecord("_acme-challenge.www.example.com", "value")
NO_WAIT = PropagationWaiter(None, timedelta(seconds=1))


def _rfc2136(server: str, env: dict[str, str], *, zone: str | None = None, key: str = "k") -> Rfc2136Provider:
    config = Rfc2136Config(server=server, tsig_key_name=key, tsig_secret_env="CORP_TSIG", zone=zone)
    return Rfc2136Provider("corp", config, env=env, propagation=NO_WAIT, timeout=3)


# ---------------------------------------------------------------- rfc2136


def test_rfc2136_missing_secret_names_the_variable() -> None:
    provider = _rfc2136("127.0.0.1:1", {})
    with pytest.raises(DnsError) as raised:
        provider.present(RECORD)
    assert raised.value.code == "dns-credentials-missing"
    assert "CORP_TSIG" in raised.value.message


def test_rfc2136_secret_that_is_not_base64_is_not_shown() -> None:
    secret = "not*base64*at-all"
    provider = _rfc2136("127.0.0.1:1", {"CORP_TSIG": secret})
    with pytest.raises(DnsError) as raised:
        provider.present(RECORD)
    assert raised.value.code == "dns-credentials-invalid"
    assert secret not in raised.value.one_line()


def test_rfc2136_unreachable_server() -> None:
    secret = base64.b64encode(os.urandom(32)).decode()
    provider = _rfc2136(f"127.0.0.1:{free_dual_port()}", {"CORP_TSIG": secret}, zone="example.com")
    with pytest.raises(DnsError) as raised:
        provider.present(RECORD)
    assert raised.value.code == "dns-server-unreachable"
    assert secret not in raised.value.one_line()


def test_rfc2136_declared_zone_is_used_and_a_wrong_one_is_refused(bind_server: BindServer) -> None:
    env = {"CORP_TSIG": bind_server.tsig_secret}
    record = new_record(bind_server.zone)
    good = _rfc2136(bind_server.host_port, env, zone=bind_server.zone, key=bind_server.tsig_key_name)
    good.present(record)
    assert bind_server.txt_values(record.fqdn) == {record.value}
    good.cleanup(record)
    wrong = _rfc2136(bind_server.host_port, env, zone="elsewhere.test", key=bind_server.tsig_key_name)
    with pytest.raises(DnsError) as raised:
        wrong.present(new_record("elsewhere.test"))
    assert raised.value.code == "dns-update-refused"
    assert "NOTAUTH" in raised.value.message or "REFUSED" in raised.value.message


def test_rfc2136_unknown_key_name_is_an_auth_failure(bind_server: BindServer) -> None:
    provider = _rfc2136(bind_server.host_port, {"CORP_TSIG": bind_server.tsig_secret}, key="no-such-key")
    with pytest.raises(DnsError) as raised:
        provider.present(new_record(bind_server.zone))
    assert raised.value.code == "dns-auth-failed"
    assert bind_server.tsig_secret not in raised.value.one_line()


# ---------------------------------------------------------------- route53


@pytest.mark.parametrize(
    ("value", "quoted"),
    [("abc", '"abc"'), ('a"b', '"a\\"b"'), ("a\\b", '"a\\\\b"')],
)
def test_route53_txt_quoting_round_trips(value: str, quoted: str) -> None:
    assert quote_txt(value) == quoted
    assert unquote_txt(quoted) == value


def test_route53_joins_split_strings() -> None:
    assert unquote_txt('"abc" "def"') == "abcdef"


# ---------------------------------------------------------------- cloudflare


def _cloudflare(handler: httpx.MockTransport, token: str = "tok-123456789") -> CloudflareProvider:  # noqa: S107
    config = CloudflareConfig(api_token_env="CF_TOKEN", zone_id="zone1", api_base="https://cf.test/client/v4")
    return CloudflareProvider("cf", config, env={"CF_TOKEN": token}, propagation=NO_WAIT, transport=handler)


def test_cloudflare_missing_token_names_the_variable() -> None:
    config = CloudflareConfig(api_token_env="CF_TOKEN", zone_id="zone1")
    provider = CloudflareProvider("cf", config, env={}, propagation=NO_WAIT)
    with pytest.raises(DnsError) as raised:
        provider.present(RECORD)
    assert raised.value.code == "dns-credentials-missing"
    assert "CF_TOKEN" in raised.value.message


def test_cloudflare_error_text_never_echoes_the_token() -> None:
    token = "tok-secret-value-42"

    def answer(request: httpx.Request) -> httpx.Response:
        assert request.headers["Authorization"] == f"Bearer {token}"
        body = {"success": False, "errors": [{"code": 1000, "message": f"bad\nthing {token}"}], "result": None}
        return httpx.Response(500, json=body)

    with pytest.raises(DnsError) as raised:
        _cloudflare(httpx.MockTransport(answer), token).present(RECORD)
    line = raised.value.one_line()
    assert raised.value.code == "dns-provider-error"
    assert token not in line
    assert "\n" not in line
    assert "HTTP 500, error 1000" in line


def test_cloudflare_identical_record_already_there_is_success() -> None:
    calls: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.method} {request.url.path}")
        if request.method == "GET":  # a concurrent writer: not listed yet, but there by the POST
            return httpx.Response(200, json={"success": True, "errors": [], "result": []})
        assert json.loads(request.content) == {"type": "TXT", "name": RECORD.fqdn, "content": "value", "ttl": 120}
        error = {"code": 81058, "message": "An identical record already exists."}
        return httpx.Response(400, json={"success": False, "errors": [error], "result": None})

    _cloudflare(httpx.MockTransport(answer)).present(RECORD)
    assert calls == ["GET /client/v4/zones/zone1/dns_records", "POST /client/v4/zones/zone1/dns_records"]


def test_cloudflare_does_not_follow_redirects() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "https://elsewhere.test/"})

    with pytest.raises(DnsError) as raised:
        _cloudflare(httpx.MockTransport(answer)).present(RECORD)
    assert "HTTP 302" in raised.value.message


# ---------------------------------------------------------------- factories and imports


def _spec(kind: str, config: object, **extra: object) -> PluginSpec:
    from pydantic import BaseModel

    assert isinstance(config, BaseModel)
    return DnsProviderSpec("p", kind, config, plugin_fingerprint(kind, config), **extra)  # type: ignore[arg-type]


def test_registry_builds_every_kind(tmp_path: Path) -> None:
    assert available_kinds("dns01") >= {"rfc2136", "route53", "cloudflare"}
    context = PluginContext(desired_dir=tmp_path, data_dir=tmp_path, env={})
    rfc = create_dns_provider(
        _spec("rfc2136", Rfc2136Config(server="127.0.0.1:53", tsig_key_name="k", tsig_secret_env="S")), context
    )
    route53 = create_dns_provider(_spec("route53", Route53Config()), context)
    route53_checked = create_dns_provider(
        _spec("route53", Route53Config(), nameservers=("127.0.0.1:53",), propagation_timeout=timedelta(seconds=7)),
        context,
    )
    cloudflare = create_dns_provider(_spec("cloudflare", CloudflareConfig(ca_bundle="ca.pem")), context)
    # Every kind follows the CNAME of _acme-challenge names unless the declaration turns it off.
    for wrapped in (rfc, route53, route53_checked, cloudflare):
        assert isinstance(wrapped, CnameFollowingProvider)
    rfc, route53, route53_checked, cloudflare = (
        unwrapped.inner for unwrapped in (rfc, route53, route53_checked, cloudflare)  # type: ignore[attr-defined]
    )
    assert isinstance(rfc, Rfc2136Provider)
    assert isinstance(route53, Route53Provider)
    assert isinstance(cloudflare, CloudflareProvider)
    assert route53._propagation is None  # INSYNC only: moto's and AWS's name servers are not asked
    assert isinstance(route53_checked, Route53Provider)
    assert route53_checked._propagation is not None
    assert route53_checked._max_timeout == timedelta(seconds=7)
    assert cloudflare._ca_bundle == tmp_path / "ca.pem"


def test_building_providers_imports_no_sdk() -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from certreconcile.plugins.dns01.route53_config import Route53Config\n"
        "from certreconcile.desired.model import DnsProviderSpec\n"
        "from certreconcile.plugins.dns01.route53_config import create as create_route53_provider\n"
        "from certreconcile.plugins.registry import PluginContext\n"
        "import certreconcile.plugins.dns01\n"
        "assert not [m for m in ('dns', 'httpx', 'boto3') if m in sys.modules], 'SDK imported by the package'\n"
        "spec = DnsProviderSpec('p', 'route53', Route53Config(), 'f')\n"
        "create_route53_provider(spec, PluginContext(Path('.'), Path('.'), {}))\n"
        "assert 'boto3' not in sys.modules, 'boto3 imported by the route53 factory'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
