"""The ``vault_pki`` issuer against a real OpenBao (``bao server -dev``, PKI at ``pki/``).

Issue (names, chain to the root with ``openssl verify``, TTL), errors with stable codes and
no token, revocation seen by OpenBao, login by AppRole, and the whole engine: ``certreconcile
apply`` of a desired state with a ``vault_pki`` issuer into PostgreSQL, then status, audit and
revoke. Also a probe of OpenBao's ACME directory on the same mount.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import hvac
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from bao_pki_server import BaoPki
from certreconcile.actual.repository import PostgresStore
from certreconcile.apply.executor import apply_plan
from certreconcile.clock import FixedClock
from certreconcile.crypto.keys import build_csr, generate_private_key
from certreconcile.domain.keys import KeyType
from certreconcile.errors import IssuerError
from certreconcile.plugins.issuers.vault_pki import VaultPkiIssuer, vault_serial_number
from certreconcile.plugins.ports import IssueRequest
from certreconcile.plugins.vault_auth import VaultLogin
from certreconcile.wiring import Settings, build_environment
from engine import load, plan_now
from helpers import require_binary

pytestmark = pytest.mark.integration

NOW = datetime.now(UTC)  # OpenBao signs with its own clock: the request's `now` is informative only


def _issuer(bao: BaoPki, *, env: dict[str, str] | None = None, **kwargs: Any) -> VaultPkiIssuer:
    return VaultPkiIssuer(
        "internal-vault",
        url=bao.url,
        role=kwargs.pop("role", bao.role),
        mount=kwargs.pop("mount", bao.mount),
        login=kwargs.pop("login", VaultLogin()),
        env=env if env is not None else {"VAULT_TOKEN": bao.token},
        **kwargs,
    )


def _request(*domains: str, key_type: KeyType = KeyType.ECDSA_P256) -> IssueRequest:
    key = generate_private_key(key_type)
    return IssueRequest(name="web", domains=domains, key_type=key_type, csr_pem=build_csr(key, domains), now=NOW)


def _sans(cert: x509.Certificate) -> list[str]:
    return cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


def _openssl_verify(bao: BaoPki, directory: Path, cert_pem: str, chain_pem: str) -> subprocess.CompletedProcess[str]:
    openssl = require_binary("openssl")
    (directory / "leaf.pem").write_text(cert_pem)
    (directory / "chain.pem").write_text(chain_pem)
    return subprocess.run(
        [
            openssl,
            "verify",
            "-CAfile",
            str(bao.ca_pem_path),
            "-untrusted",
            str(directory / "chain.pem"),
            str(directory / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )


def _revocation_time(bao: BaoPki, cert_pem: str) -> int:
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    client = hvac.Client(url=bao.url, token=bao.token)
    data = client.adapter.get(f"/v1/{bao.mount}/cert/{vault_serial_number(cert)}")["data"]
    return int(data["revocation_time"])


# ---------------------------------------------------------------- the issuer on its own


def test_issue_names_and_chain(bao_pki: BaoPki, tmp_path: Path) -> None:
    issued = _issuer(bao_pki).issue(_request("a.certreconcile.test", "b.certreconcile.test", "*.w.certreconcile.test"))
    leaf = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    assert leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "a.certreconcile.test"
    assert set(_sans(leaf)) == {"a.certreconcile.test", "b.certreconcile.test", "*.w.certreconcile.test"}
    # The chain holds the CA(s), never the leaf; the leaf chains to the root CA.
    chain = x509.load_pem_x509_certificates(issued.chain_pem.encode())
    assert chain and leaf not in chain
    root = x509.load_pem_x509_certificate(bao_pki.ca_pem_path.read_bytes())
    assert leaf.issuer == root.subject
    verified = _openssl_verify(bao_pki, tmp_path, issued.cert_pem, issued.chain_pem)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert issued.cert_pem.endswith("-----END CERTIFICATE-----\n")


def test_issue_rsa_with_ttl(bao_pki: BaoPki, tmp_path: Path) -> None:
    issued = _issuer(bao_pki, ttl=timedelta(hours=48)).issue(
        _request("rsa.certreconcile.test", key_type=KeyType.RSA_2048)
    )
    leaf = x509.load_pem_x509_certificate(issued.cert_pem.encode())
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert timedelta(hours=48) <= lifetime <= timedelta(hours=48, minutes=5)  # OpenBao back-dates 30 s
    assert _openssl_verify(bao_pki, tmp_path, issued.cert_pem, issued.chain_pem).returncode == 0


def test_name_outside_the_role(bao_pki: BaoPki) -> None:
    with pytest.raises(IssuerError) as caught:
        _issuer(bao_pki).issue(_request("www.example.org"))
    assert caught.value.code == "vault-pki-name-not-allowed"
    assert "www.example.org" in caught.value.message  # OpenBao's reason is kept: it names the name
    assert "\n" not in caught.value.one_line()
    assert bao_pki.token not in caught.value.one_line()


def test_wrong_token_is_one_line_without_the_token(bao_pki: BaoPki) -> None:
    token = "s.wrong-token-" + "q" * 16
    with pytest.raises(IssuerError) as caught:
        _issuer(bao_pki, env={"BAO_TOKEN": token}).issue(_request("a.certreconcile.test"))
    line = caught.value.one_line()
    assert caught.value.code == "vault-pki-access-denied"
    assert "\n" not in line and token not in line and "s.wrong" not in line
    assert "HTTP 403" in line and bao_pki.url in line


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"role": "no-such-role"}, "vault-pki-role-not-found"),
        ({"mount": "no-such-pki"}, "vault-pki-mount-not-found"),
        ({"env": {}}, "vault-pki-credentials-missing"),
    ],
    ids=["role", "mount", "no-token"],
)
def test_misconfiguration_codes(bao_pki: BaoPki, change: dict[str, Any], code: str) -> None:
    with pytest.raises(IssuerError) as caught:
        _issuer(bao_pki, **change).issue(_request("a.certreconcile.test"))
    assert caught.value.code == code
    assert caught.value.hint
    assert bao_pki.token not in caught.value.one_line()


def test_unreachable_server(closed_port: int) -> None:
    issuer = VaultPkiIssuer(
        "v", url=f"http://127.0.0.1:{closed_port}", role="r", login=VaultLogin(), env={"VAULT_TOKEN": "t0ken-x"}
    )
    with pytest.raises(IssuerError) as caught:
        issuer.issue(_request("a.certreconcile.test"))
    assert caught.value.code == "vault-pki-unavailable"
    assert "t0ken-x" not in caught.value.one_line()


def test_revoke(bao_pki: BaoPki) -> None:
    issuer = _issuer(bao_pki)
    issued = issuer.issue(_request("revoked.certreconcile.test"))
    assert _revocation_time(bao_pki, issued.cert_pem) == 0
    issuer.revoke(issued.cert_pem, "keyCompromise")
    assert _revocation_time(bao_pki, issued.cert_pem) > 0
    issuer.revoke(issued.cert_pem, "keyCompromise")  # again: not an error


def test_revoke_a_certificate_openbao_never_issued(bao_pki: BaoPki) -> None:
    key = generate_private_key(KeyType.ECDSA_P256)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "foreign.certreconcile.test")])
    foreign = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - timedelta(minutes=1))
        .not_valid_after(NOW + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    with pytest.raises(IssuerError) as caught:
        _issuer(bao_pki).revoke(foreign.public_bytes(serialization.Encoding.PEM).decode(), "unspecified")
    assert caught.value.code == "vault-pki-certificate-unknown"
    assert "\n" not in caught.value.one_line()


def test_approle_login(bao_pki: BaoPki) -> None:
    client = hvac.Client(url=bao_pki.url, token=bao_pki.token)
    client.sys.create_or_update_policy(
        "certreconcile-pki",
        f'path "{bao_pki.mount}/sign/{bao_pki.role}" {{ capabilities = ["update"] }}\n'
        f'path "{bao_pki.mount}/revoke" {{ capabilities = ["update"] }}\n',
    )
    client.auth.approle.create_or_update_approle("certreconcile-pki", token_policies=["certreconcile-pki"])
    role_id = client.auth.approle.read_role_id("certreconcile-pki")["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id("certreconcile-pki")["data"]["secret_id"]
    issuer = _issuer(
        bao_pki,
        login=VaultLogin(method="approle", role_id_env="PKI_ROLE", secret_id_env="PKI_SECRET"),
        env={"PKI_ROLE": role_id, "PKI_SECRET": secret_id},
    )
    issued = issuer.issue(_request("approle.certreconcile.test"))
    issuer.revoke(issued.cert_pem, "superseded")
    assert _revocation_time(bao_pki, issued.cert_pem) > 0

    wrong = _issuer(
        bao_pki,
        login=VaultLogin(method="approle", role_id_env="PKI_ROLE", secret_id_env="PKI_SECRET"),
        env={"PKI_ROLE": role_id, "PKI_SECRET": "not-the-secret-id"},
    )
    with pytest.raises(IssuerError) as caught:
        wrong.issue(_request("approle.certreconcile.test"))
    assert caught.value.code == "vault-pki-access-denied"
    assert secret_id not in caught.value.one_line() and role_id not in caught.value.one_line()


def test_acme_directory(bao_pki: BaoPki) -> None:
    """OpenBao's ACME server on the same mount answers a directory over plain http (dev mode)."""
    with urllib.request.urlopen(bao_pki.acme_directory_url, timeout=10) as response:  # noqa: S310 - local server
        directory = json.load(response)
    assert directory["newNonce"] == f"{bao_pki.url}/v1/{bao_pki.mount}/acme/new-nonce"
    assert {"newAccount", "newOrder", "revokeCert", "keyChange"} <= set(directory)
    assert directory["meta"]["externalAccountRequired"] is False
    request = urllib.request.Request(directory["newNonce"], method="HEAD")  # noqa: S310
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        assert response.headers["Replay-Nonce"]  # the mount passes the ACME headers through


# ---------------------------------------------------------------- through the engine


def _doc(bao: BaoPki, out: str, certificates: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "kms": {"local": {}},
        "issuers": {
            "internal-vault": {
                "vault_pki": {"url": bao.url, "mount": bao.mount, "role": bao.role, "ttl": "30d"},
            }
        },
        "targets": {"deploy": {"files": {"dir": out}}},
        "certificates": certificates,
    }


def _cert(name: str, *domains: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "domains": list(domains), "issuer": "internal-vault", "targets": ["deploy"], **extra}


def test_apply_through_the_engine(bao_pki: BaoPki, tmp_path: Path, postgres_store: PostgresStore) -> None:
    clock = FixedClock(NOW)
    desired = load(
        tmp_path,
        _doc(
            bao_pki,
            "out/deploy",
            [
                _cert("web", "web.certreconcile.test", "www.certreconcile.test"),
                _cert("api", "api.certreconcile.test", key="rsa-2048"),
            ],
        ),
    )
    settings = Settings(
        desired_dir=tmp_path.resolve(),
        data_dir=tmp_path.resolve() / ".certreconcile",
        database_url=None,
        env={
            "VAULT_TOKEN": bao_pki.token,
            "USER": "tester",
            "CERTRECONCILE_LOCAL_KMS_KEY_FILE": str(tmp_path / "kms.key"),
        },
    )
    result = apply_plan(
        plan_now(desired, postgres_store, clock), desired, build_environment(desired, settings, postgres_store, clock)
    )
    assert result.ok, result.failures
    with postgres_store.session() as session:
        certificates = session.load_actual().certificates
    assert set(certificates) == {"web", "api"}
    for name in ("web", "api"):
        folder = tmp_path / "out" / "deploy" / name
        verified = _openssl_verify(
            bao_pki, tmp_path, (folder / "cert.pem").read_text(), (folder / "chain.pem").read_text()
        )
        assert verified.returncode == 0, verified.stdout + verified.stderr
    leaf = x509.load_pem_x509_certificate((tmp_path / "out" / "deploy" / "web" / "cert.pem").read_bytes())
    assert set(_sans(leaf)) == {"web.certreconcile.test", "www.certreconcile.test"}
    assert plan_now(desired, postgres_store, clock).changes == ()  # converged


def _cli(*args: str, env: dict[str, str], cwd: Path, code: int = 0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "certreconcile", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
        check=False,
    )
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    return result


def test_cli_apply_status_audit_revoke(bao_pki: BaoPki, tmp_path: Path, database_url: str) -> None:
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "certs.yaml").write_text(
        yaml.safe_dump(
            _doc(bao_pki, "out", [_cert("shop", "shop.certreconcile.test", "*.shop.certreconcile.test")]),
            sort_keys=False,
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CERTRECONCILE_", "VAULT_", "BAO_"))}
    env.update(
        {
            "CERTRECONCILE_DATABASE_URL": database_url,
            "CERTRECONCILE_LOCAL_KMS_KEY_FILE": str(tmp_path / "kms.key"),
            "NO_COLOR": "1",
            "USER": "e2e-tester",
        }
    )
    d = str(desired)
    _cli("plan", "--dir", d, env=env, cwd=tmp_path)  # plan needs no token
    env["VAULT_TOKEN"] = bao_pki.token
    applied = _cli("apply", "--dir", d, "--auto-approve", env=env, cwd=tmp_path)
    assert bao_pki.token not in applied.stdout + applied.stderr
    status = json.loads(_cli("status", "--dir", d, "--format", "json", env=env, cwd=tmp_path).stdout)
    (shop,) = status["certificates"]
    assert (shop["name"], shop["issuer"], shop["status"]) == ("shop", "internal-vault", "active")
    assert shop["domains"] == ["shop.certreconcile.test", "*.shop.certreconcile.test"]
    assert shop["targets_verified"] == shop["targets_total"] == 1
    audit = json.loads(_cli("audit", "--dir", d, "--name", "shop", "--format", "json", env=env, cwd=tmp_path).stdout)
    assert [event["actor"] for event in audit] and all(event["name"] == "shop" for event in audit)
    assert any(event["action"] == "issued" for event in audit), audit

    cert_pem = (desired / "out" / "shop" / "cert.pem").read_text()
    _cli("revoke", "shop", "--dir", d, "--reason", "keyCompromise", "--force", env=env, cwd=tmp_path)
    assert _revocation_time(bao_pki, cert_pem) > 0
    audit = json.loads(_cli("audit", "--dir", d, "--name", "shop", "--format", "json", env=env, cwd=tmp_path).stdout)
    revoked = [event for event in audit if event["action"] == "revoked"]
    assert revoked and "keyCompromise" in json.dumps(revoked[0]["detail"]), audit

    # Without a token, apply fails for the certificate in one line, no traceback, no secret.
    (desired / "certs.yaml").write_text(
        yaml.safe_dump(_doc(bao_pki, "out", [_cert("extra", "extra.certreconcile.test")]), sort_keys=False)
    )
    del env["VAULT_TOKEN"]
    # (shop leaves the declaration: retiring the only managed name needs --allow-destroy 1)
    refused = _cli("apply", "--dir", d, "--auto-approve", "--allow-destroy", "1", env=env, cwd=tmp_path, code=1)
    assert "vault-pki-credentials-missing" in refused.stdout + refused.stderr
    assert "Traceback" not in refused.stdout + refused.stderr
