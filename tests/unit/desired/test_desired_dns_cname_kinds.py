"""dns_providers: follow_cname and resolvers (every kind), and the lexicon and exec kinds' configurations."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from certreconcile.desired import load_desired, validate_directory
from certreconcile.desired.model import DnsProviderSpec
from certreconcile.plugins.dns01.exec_config import ExecConfig
from certreconcile.plugins.dns01.lexicon_config import LexiconConfig
from helpers import require_binary

PROVIDERS = """\
dns_providers:
  corp:
    rfc2136: {server: "127.0.0.1:5353", tsig_key_name: k, tsig_secret_env: CORP_TSIG}
    nameservers: ["127.0.0.1:5353"]
  ovh:
    lexicon:
      provider: ovh
      zone: example.com
      options: {auth_entrypoint: ovh-eu}
      credentials_env: {auth_application_key: OVH_AK, auth_application_secret: OVH_AS, auth_consumer_key: OVH_CK}
    follow_cname: false
  hook:
    exec:
      program: hooks/update-dns.sh
      timeout: 2m
      env: {DNS_SERVER: ns1.example.com}
      pass_env: [HOOK_TOKEN]
    resolvers: ["127.0.0.1:53", "[::1]:53"]
"""


def _specs(tmp_path: Path, text: str = PROVIDERS) -> dict[str, DnsProviderSpec]:
    (tmp_path / "dns.yaml").write_text(text)
    providers = load_desired(tmp_path).dns_providers
    assert all(isinstance(spec, DnsProviderSpec) for spec in providers.values())
    return providers  # type: ignore[return-value]


def test_cname_settings_and_the_new_kinds_load(tmp_path: Path) -> None:
    corp, ovh, hook = (_specs(tmp_path)[name] for name in ("corp", "ovh", "hook"))
    assert (corp.follow_cname, corp.resolvers) == (True, None)  # the defaults: follow, through the nameservers
    assert (ovh.follow_cname, ovh.resolvers) == (False, None)
    assert (hook.follow_cname, hook.resolvers) == (True, ("127.0.0.1:53", "[::1]:53"))
    assert isinstance(ovh.config, LexiconConfig)
    assert ovh.config.provider == "ovh"
    assert ovh.config.credentials_env["auth_consumer_key"] == "OVH_CK"
    assert ovh.config.ttl == 60
    assert isinstance(hook.config, ExecConfig)
    assert hook.config.timeout.delta.total_seconds() == 120
    assert hook.config.pass_env == ("HOOK_TOKEN",)


def test_default_cname_settings_leave_the_digest_unchanged_others_change_it(tmp_path: Path) -> None:
    """A saved plan made before these settings existed stays valid: their defaults are not in the digest."""
    plain = "dns_providers:\n  p:\n    route53: {}\n"
    before = load_desired(_write(tmp_path, plain)).digest
    assert load_desired(_write(tmp_path, plain + "    follow_cname: true\n")).digest == before
    assert load_desired(_write(tmp_path, plain + "    follow_cname: false\n")).digest != before
    assert load_desired(_write(tmp_path, plain + "    resolvers: ['127.0.0.1:53']\n")).digest != before


def _write(directory: Path, text: str) -> Path:
    (directory / "dns.yaml").write_text(text)
    return directory


@pytest.mark.parametrize(
    ("entry", "codes"),
    [
        pytest.param("{route53: {}, follow_cname: maybe}", ["schema-invalid-value"], id="follow-cname-not-bool"),
        pytest.param("{route53: {}, resolvers: ['127.0.0.1:70000']}", ["invalid-port"], id="resolver-port"),
        pytest.param("{route53: {}, resolvers: [ns1.example.com]}", ["schema-invalid-value"], id="resolver-no-port"),
        pytest.param("{lexicon: {provider: OVH}}", ["schema-invalid-value"], id="lexicon-provider-name"),
        pytest.param("{lexicon: {provider: ovh, credentials_env: {auth_key: 'not a name'}}}",
                     ["schema-invalid-value"], id="lexicon-credential-env-name"),
        pytest.param("{lexicon: {provider: ovh, token: x}}", ["schema-unknown-field"], id="lexicon-unknown-key"),
        pytest.param("{lexicon: {provider: ovh, ttl: 0}}", ["schema-invalid-value"], id="lexicon-ttl"),
        pytest.param("{exec: {}}", ["schema-missing-field"], id="exec-without-program"),
        pytest.param("{exec: {program: /bin/true, pass_env: ['A-B']}}", ["schema-invalid-value"],
                     id="exec-pass-env-name"),
        pytest.param("{exec: {program: /bin/true, env: {'1X': y}}}", ["schema-invalid-value"], id="exec-env-name"),
        pytest.param("{exec: {program: /bin/true, timeout: 0s}}", ["invalid-duration"], id="exec-timeout"),
        pytest.param("{exec: {program: /usr/local/bin/hook}, follow_cname: false}", [], id="exec-valid"),
    ],
)  # fmt: skip
def test_invalid_entries(tmp_path: Path, entry: str, codes: list[str]) -> None:
    (tmp_path / "dns.yaml").write_text(f"dns_providers:\n  p: {entry}\n")
    assert [d.code for d in validate_directory(tmp_path)] == codes


DNS01_EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "dns01"


def test_the_dns01_example_is_valid_and_its_hook_passes_shellcheck() -> None:
    (document,) = sorted((DNS01_EXAMPLE / "desired-state").glob("*.yaml"))
    modeline = "# yaml-language-server: $schema=../../../schemas/desired-state.schema.json\n"
    assert document.read_text().startswith(modeline)
    assert validate_directory(DNS01_EXAMPLE / "desired-state") == []
    kinds = {spec.kind for spec in load_desired(DNS01_EXAMPLE / "desired-state").dns_providers.values()}
    assert kinds == {"rfc2136", "lexicon", "exec"}
    hook = DNS01_EXAMPLE / "lego-nsupdate.sh"
    assert hook.stat().st_mode & 0o111, "the hook must be executable"
    result = subprocess.run([require_binary("shellcheck"), str(hook)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
