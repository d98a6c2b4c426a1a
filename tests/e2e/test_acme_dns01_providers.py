"""DNS-01 for everyone, end to end: ``certreconcile apply`` against Pebble resolving through real servers.

* a CNAME delegation: ``_acme-challenge.wild.cname.test CNAME x.delegated.test.`` in BIND9
  (``bind_delegation``); the rfc2136 provider publishes in ``delegated.test`` and a wildcard
  certificate is issued;
* a lego-style exec hook (``examples/dns01/lego-nsupdate.sh``, nsupdate) issues a
  certificate, called exactly as lego calls it (``present FQDN. VALUE``), also through the
  delegation (it gets the end of the chain, as lego's EffectiveFQDN);
* the lexicon kind (dns-lexicon's powerdns provider) issues a certificate from a Pebble that
  resolves through PowerDNS.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from acme_servers import Pebble, start_pebble
from dns_extra_servers import BindDelegation, PowerDns
from e2e.conftest import Runner
from e2e.test_acme_pebble import subject_names, verify_chain
from helpers import require_binary

pytestmark = pytest.mark.integration

HOOK = Path(__file__).resolve().parents[2] / "examples" / "dns01" / "lego-nsupdate.sh"


@pytest.fixture(scope="session")
def pebble_on_delegation(
    tmp_path_factory: pytest.TempPathFactory, bind_delegation: BindDelegation
) -> Iterator[Pebble]:
    with start_pebble(tmp_path_factory.mktemp("pebble-delegation"), bind_delegation.host_port) as server:
        yield server


@pytest.fixture(scope="session")
def pebble_on_powerdns(tmp_path_factory: pytest.TempPathFactory, powerdns: PowerDns) -> Iterator[Pebble]:
    with start_pebble(tmp_path_factory.mktemp("pebble-powerdns"), powerdns.host_port) as server:
        yield server


def _doc(pebble: Pebble, provider: dict[str, Any], certificates: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "issuers": {
            "pebble": {
                "acme": {"directory": pebble.directory_url, "ca_bundle": str(pebble.ca_bundle), "order_timeout": "60s"}
            }
        },
        "dns_providers": {"dns": {**provider, "propagation_timeout": "30s"}},
        "targets": {"deploy": {"files": {"dir": "out"}}},
        "certificates": [
            {**certificate, "issuer": "pebble", "challenge": "dns-01", "dns_provider": "dns", "targets": ["deploy"]}
            for certificate in certificates
        ],
    }


def _apply(run_cli: Runner, tmp_path: Path, doc: dict[str, Any], env: dict[str, str]) -> Path:
    desired = tmp_path / "repo"
    desired.mkdir()
    (desired / "certificates.yaml").write_text(yaml.safe_dump(doc))
    result = run_cli("apply", "--dir", str(desired), "--auto-approve", env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return desired


def test_a_wildcard_through_a_cname_delegation(
    pebble_on_delegation: Pebble,
    bind_delegation: BindDelegation,
    run_cli: Runner,
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    bind = bind_delegation.bind
    provider = {
        "rfc2136": {"server": bind.host_port, "tsig_key_name": bind.tsig_key_name, "tsig_secret_env": "TSIG"},
        "nameservers": [bind.host_port],  # also where the CNAMEs are followed (no resolvers declared)
    }
    certificates = [{"name": "wild", "domains": ["*.wild.cname.test", "wild.cname.test"]}]
    desired = _apply(run_cli, tmp_path, _doc(pebble_on_delegation, provider, certificates),
                     {**cli_env, "TSIG": bind.tsig_secret})  # fmt: skip
    verify_chain(pebble_on_delegation, desired / "out" / "wild", tmp_path)
    assert subject_names(desired / "out" / "wild" / "cert.pem") == {"*.wild.cname.test", "wild.cname.test"}
    assert bind.txt_values("x.delegated.test") == set()  # both values removed from the delegated zone


def test_a_lego_style_exec_hook_issues_a_certificate(
    pebble_on_delegation: Pebble,
    bind_delegation: BindDelegation,
    run_cli: Runner,
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    require_binary("nsupdate")
    bind = bind_delegation.bind
    calls = tmp_path / "calls.log"
    logging_hook = tmp_path / "hook.sh"  # records its arguments and environment, then runs the lego-style hook
    logging_hook.write_text(
        f'#!/bin/sh\necho "$* EXEC_PROPAGATION_TIMEOUT=$EXEC_PROPAGATION_TIMEOUT '
        f'DB=${{CERTRECONCILE_DATABASE_URL:-unset}}" >> {calls}\nexec {HOOK} "$@"\n'
    )
    logging_hook.chmod(0o755)
    provider = {
        "exec": {
            "program": str(logging_hook),
            "env": {"NSUPDATE_SERVER": bind.address, "NSUPDATE_PORT": str(bind.port),
                    "NSUPDATE_KEY_NAME": bind.tsig_key_name},
            "pass_env": ["NSUPDATE_TSIG_SECRET"],
        },
        "nameservers": [bind.host_port],
    }  # fmt: skip
    certificates = [{"name": "hooked", "domains": ["hook.delegated.test", "lexi.cname.test"]}]
    env = {**cli_env, "NSUPDATE_TSIG_SECRET": bind.tsig_secret, "PATH": os.environ["PATH"]}
    desired = _apply(run_cli, tmp_path, _doc(pebble_on_delegation, provider, certificates), env)
    verify_chain(pebble_on_delegation, desired / "out" / "hooked", tmp_path)
    lines = calls.read_text().splitlines()
    actions = sorted(line.split()[0] + " " + line.split()[1] for line in lines)
    # lego's arguments: the action, the FQDN with its final dot (the end of the CNAME chain), the value
    assert actions == [
        "cleanup _acme-challenge.hook.delegated.test.", "cleanup lexi.delegated.test.",
        "present _acme-challenge.hook.delegated.test.", "present lexi.delegated.test.",
    ]  # fmt: skip
    assert all(len(line.split()[2]) == 43 for line in lines)  # base64url SHA-256, as lego passes it
    assert all("EXEC_PROPAGATION_TIMEOUT=30 DB=unset" in line for line in lines)  # lego's variables, not ours
    assert bind.txt_values("lexi.delegated.test") == set()


def test_the_lexicon_kind_issues_a_certificate_through_powerdns(
    pebble_on_powerdns: Pebble, powerdns: PowerDns, run_cli: Runner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    provider = {
        "lexicon": {
            "provider": "powerdns",
            "zone": powerdns.zone,
            "options": {"pdns_server": powerdns.api_url},
            "credentials_env": {"auth_token": "PDNS_API_KEY"},
        },
        "nameservers": [powerdns.host_port],
    }
    certificates = [{"name": "lexi", "domains": [f"*.app.{powerdns.zone}", f"app.{powerdns.zone}"]}]
    env = {**cli_env, "PDNS_API_KEY": powerdns.api_key}
    desired = _apply(run_cli, tmp_path, _doc(pebble_on_powerdns, provider, certificates), env)
    verify_chain(pebble_on_powerdns, desired / "out" / "lexi", tmp_path)
    assert powerdns.txt_values(f"_acme-challenge.app.{powerdns.zone}") == set()
