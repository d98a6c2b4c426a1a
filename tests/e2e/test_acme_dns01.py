"""DNS-01 end to end: ``certreconcile apply`` against a Pebble that resolves through a real BIND9.

The rfc2136 provider publishes the TXT records by TSIG-signed dynamic updates to BIND, waits
until BIND (the zone's authoritative server here) answers them, and removes them afterwards;
Pebble validates by querying BIND. A wildcard certificate and its base name share one
``_acme-challenge`` name with two TXT values at once.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from acme_servers import Pebble, start_pebble
from dns_servers import BindServer
from e2e.conftest import Runner
from e2e.test_acme_pebble import subject_names, verify_chain

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def pebble_on_bind(tmp_path_factory: pytest.TempPathFactory, bind_server: BindServer) -> Iterator[Pebble]:
    with start_pebble(tmp_path_factory.mktemp("pebble-bind"), bind_server.host_port) as server:
        yield server


def dns01_doc(pebble: Pebble, bind: BindServer, certificates: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kms": {"local": {}},
        "issuers": {
            "pebble": {
                "acme": {
                    "directory": pebble.directory_url,
                    "ca_bundle": str(pebble.ca_bundle),
                    "order_timeout": "60s",
                }
            }
        },
        "dns_providers": {
            "corp-dns": {
                "rfc2136": {
                    "server": bind.host_port,
                    "tsig_key_name": bind.tsig_key_name,
                    "tsig_secret_env": "CORP_TSIG_SECRET",
                },
                "nameservers": [bind.host_port],
                "propagation_timeout": "30s",
            }
        },
        "targets": {"deploy": {"files": {"dir": "out"}}},
        "certificates": certificates,
    }


def test_dns01_and_a_wildcard_through_bind(
    pebble_on_bind: Pebble, bind_server: BindServer, run_cli: Runner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    zone = bind_server.zone
    certificates = [
        {"name": "wild", "domains": [f"*.w.{zone}", f"w.{zone}"], "issuer": "pebble", "challenge": "dns-01",
         "dns_provider": "corp-dns", "targets": ["deploy"]},
        {"name": "internal-app", "domains": [f"app.{zone}"], "issuer": "pebble", "challenge": "dns-01",
         "dns_provider": "corp-dns", "targets": ["deploy"]},
    ]  # fmt: skip
    desired = tmp_path / "repo"
    desired.mkdir()
    (desired / "certificates.yaml").write_text(yaml.safe_dump(dns01_doc(pebble_on_bind, bind_server, certificates)))
    env = {**cli_env, "CORP_TSIG_SECRET": bind_server.tsig_secret}

    result = run_cli("apply", "--dir", str(desired), "--auto-approve", env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    assert bind_server.tsig_secret not in result.stdout + result.stderr
    for name in ("wild", "internal-app"):
        verify_chain(pebble_on_bind, desired / "out" / name, tmp_path)
    assert subject_names(desired / "out" / "wild" / "cert.pem") == {f"*.w.{zone}", f"w.{zone}"}
    # Every record was removed again.
    assert bind_server.txt_values(f"_acme-challenge.w.{zone}") == set()
    assert bind_server.txt_values(f"_acme-challenge.app.{zone}") == set()


def test_missing_tsig_secret_fails_clearly_and_issues_nothing(
    pebble_on_bind: Pebble, bind_server: BindServer, run_cli: Runner, tmp_path: Path
) -> None:
    certificates = [{"name": "nosecret", "domains": [f"nosecret.{bind_server.zone}"], "issuer": "pebble",
                     "challenge": "dns-01", "dns_provider": "corp-dns"}]  # fmt: skip
    desired = tmp_path / "repo"
    desired.mkdir()
    (desired / "certificates.yaml").write_text(yaml.safe_dump(dns01_doc(pebble_on_bind, bind_server, certificates)))
    result = run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=1)
    assert "CORP_TSIG_SECRET" in result.stdout + result.stderr


def test_records_are_removed_when_validation_fails(
    pebble: Pebble, bind_server: BindServer, run_cli: Runner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    """This Pebble asks challtestsrv, not BIND: it never sees the TXT value, and validation fails."""
    zone = bind_server.zone
    certificates = [{"name": "unseen", "domains": [f"unseen.{zone}"], "issuer": "pebble", "challenge": "dns-01",
                     "dns_provider": "corp-dns"}]  # fmt: skip
    desired = tmp_path / "repo"
    desired.mkdir()
    (desired / "certificates.yaml").write_text(yaml.safe_dump(dns01_doc(pebble, bind_server, certificates)))
    env = {**cli_env, "CORP_TSIG_SECRET": bind_server.tsig_secret}
    result = run_cli("apply", "--dir", str(desired), "--auto-approve", env=env, check_code=1)
    assert "acme-validation-failed" in result.stdout + result.stderr
    assert bind_server.txt_values(f"_acme-challenge.unseen.{zone}") == set()
