"""``certreconcile import`` end to end: certificates another tool wrote, adopted without reissuing.

The certificates are made here with ``cryptography`` (a CA and a leaf, as an ACME CA would sign) and
written as lego writes them (``certificates/<domain>.crt`` with the issuer bundled, ``.key``,
``.issuer.crt``), or as a files target holds them. After the import, ``plan`` issues nothing, ``status``
shows the certificate's real expiry, the audit says ``imported``; bad input is refused with its own
error, and nothing is written.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from certreconcile.plugins.targets.handshake import handshake_observation
from e2e.conftest import Runner
from web_servers import Nginx

pytestmark = pytest.mark.integration

NOW = datetime.datetime(2026, 3, 1, 12, 0, tzinfo=datetime.UTC)
DOMAINS = ["shop.example.test", "www.shop.example.test"]
KeyTypes = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


def _pem_key(key: KeyTypes) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())  # fmt: skip


def _ca() -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Another Tool's CA")])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=400)).not_valid_after(NOW + datetime.timedelta(days=400))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    return key, cert


def _leaf(
    ca: tuple[ec.EllipticCurvePrivateKey, x509.Certificate], key: KeyTypes, domains: list[str], *, days: int = 90,
    age: int = 30, now: datetime.datetime = NOW,
) -> x509.Certificate:  # fmt: skip
    ca_key, ca_cert = ca
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=age))
        .not_valid_after(now - datetime.timedelta(days=age) + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in domains]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )  # fmt: skip


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_lego(root: Path, leaf: x509.Certificate, issuer: x509.Certificate, key: KeyTypes, domain: str) -> Path:
    """lego's --path layout: certificates/<domain>.crt (leaf + issuer, its default bundle), .key, .issuer.crt, .json."""
    folder = root / "certificates"
    folder.mkdir(parents=True)
    stem = domain.replace("*", "_")
    (folder / f"{stem}.crt").write_bytes(_pem(leaf) + _pem(issuer))
    (folder / f"{stem}.issuer.crt").write_bytes(_pem(issuer))
    (folder / f"{stem}.key").write_bytes(_pem_key(key))
    (folder / f"{stem}.key").chmod(0o600)
    (folder / f"{stem}.json").write_text(json.dumps({"domain": domain, "certUrl": "https://ca.example/cert/1"}))
    return root


def _desired(root: Path, domains: list[str] | None = None, key: str = "ecdsa-p256") -> Path:
    desired = root / "desired"
    desired.mkdir()
    doc: dict[str, Any] = {
        "kms": {"local": {}},
        "issuers": {"demo-ca": {"local_ca": {"common_name": "demo CA", "lifetime": "90d"}}},
        "targets": {"web": {"files": {"dir": str(root / "web")}}},
        "certificates": [{"name": "shop", "domains": domains or DOMAINS, "issuer": "demo-ca", "key": key,
                          "renew_before": "30d", "targets": ["web"]}],
    }  # fmt: skip
    (desired / "certreconcile.yaml").write_text(yaml.safe_dump(doc))
    return desired


@pytest.fixture
def env(cli_env: dict[str, str]) -> dict[str, str]:
    return {**cli_env, "CERTRECONCILE_TEST_NOW": NOW.strftime("%Y-%m-%dT%H:%M:%SZ")}


def _counts(url: str) -> tuple[int, ...]:
    with psycopg.connect(url) as conn:
        tables = ("Certificate", "CertAudit", "Distribution")
        counts = [conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables]  # type: ignore[index]
        counts.append(conn.execute("SELECT serial FROM StateMeta").fetchone()[0])  # type: ignore[index]
    return tuple(counts)


def test_lego_directory_import_then_plan_issues_nothing(run_cli: Runner, env: dict[str, str], tmp_path: Path) -> None:
    ca = _ca()
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _leaf(ca, key, DOMAINS)
    lego = write_lego(tmp_path / "lego", leaf, ca[1], key, DOMAINS[0])
    d = str(_desired(tmp_path))

    imported = run_cli("import", "shop", "--dir", d, "--from-dir", str(lego), "--format", "json", env=env,
                       check_code=0)  # fmt: skip
    result = json.loads(imported.stdout)
    assert result["serial"] == format(leaf.serial_number, "x")
    assert result["status"] == "issued" and result["pending_targets"] == ["web"]
    assert result["not_after"] == leaf.not_valid_after_utc.isoformat()
    assert "PRIVATE KEY" not in imported.stdout + imported.stderr

    plan = json.loads(run_cli("plan", "--dir", d, "--format", "json", env=env, check_code=0).stdout)
    assert [(c["action"], c["name"]) for c in plan["changes"]] == [("redistribute", "shop")]  # not issue/rotate
    status = json.loads(run_cli("status", "--dir", d, "--format", "json", env=env, check_code=0).stdout)
    [shop] = status["certificates"]
    assert shop["not_after"].startswith(leaf.not_valid_after_utc.strftime("%Y-%m-%dT%H:%M:%S"))
    audit = json.loads(run_cli("audit", "--dir", d, "--format", "json", env=env, check_code=0).stdout)
    assert [(e["action"], e["name"]) for e in audit] == [("imported", "shop")]
    assert audit[0]["detail"]["source"] == "directory (lego)"

    # apply deploys the imported certificate as it is (with lego's issuer as the chain): nothing is issued.
    applied = run_cli("apply", "--dir", d, "--auto-approve", env=env, check_code=0)
    assert "1 done" in applied.stdout
    assert (tmp_path / "web" / "shop" / "cert.pem").read_bytes() == _pem(leaf)
    assert (tmp_path / "web" / "shop" / "chain.pem").read_bytes() == _pem(ca[1])
    assert run_cli("plan", "--dir", d, "--detailed-exitcode", env=env).returncode == 0
    audit = json.loads(run_cli("audit", "--dir", d, "--format", "json", env=env, check_code=0).stdout)
    assert "issued" not in {e["action"] for e in audit}


def test_import_from_the_target_that_serves_it_needs_no_redistribution(
    run_cli: Runner, env: dict[str, str], tmp_path: Path
) -> None:
    ca = _ca()
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _leaf(ca, key, DOMAINS)
    folder = tmp_path / "web" / "shop"  # the files target's layout, as a previous tool left it
    folder.mkdir(parents=True)
    (folder / "fullchain.pem").write_bytes(_pem(leaf) + _pem(ca[1]))
    (folder / "privkey.pem").write_bytes(_pem_key(key))
    d = str(_desired(tmp_path))
    out = run_cli("import", "shop", "--dir", d, "--from-target", "web", "--key", str(folder / "privkey.pem"),
                  env=env, check_code=0)  # fmt: skip
    assert "active" in out.stdout and "served by: web" in out.stdout
    assert run_cli("plan", "--dir", d, "--detailed-exitcode", env=env).returncode == 0  # no change at all


def _refused(run_cli: Runner, env: dict[str, str], args: list[str], code: str) -> str:
    before = _counts(env["CERTRECONCILE_DATABASE_URL"])
    result = run_cli("import", *args, env=env, check_code=1)
    assert f"error[{code}]" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and "PRIVATE KEY" not in result.stdout + result.stderr
    assert _counts(env["CERTRECONCILE_DATABASE_URL"]) == before  # nothing written
    return result.stderr


def test_bad_imports_are_refused_and_write_nothing(run_cli: Runner, env: dict[str, str], tmp_path: Path) -> None:
    ca = _ca()
    key = ec.generate_private_key(ec.SECP256R1())
    files = tmp_path / "pem"
    files.mkdir()

    def write(name: str, leaf: x509.Certificate, leaf_key: KeyTypes) -> tuple[str, str]:
        (files / f"{name}.crt").write_bytes(_pem(leaf))
        (files / f"{name}.key").write_bytes(_pem_key(leaf_key))
        return str(files / f"{name}.crt"), str(files / f"{name}.key")

    d = str(_desired(tmp_path))
    good_cert, good_key = write("good", _leaf(ca, key, DOMAINS), key)
    _, other_key = write("other", _leaf(ca, key, DOMAINS), ec.generate_private_key(ec.SECP256R1()))
    message = _refused(run_cli, env, ["shop", "--dir", d, "--cert", good_cert, "--key", other_key],
                       "import-key-mismatch")  # fmt: skip
    assert "the private key does not belong to the certificate" in message
    message = _refused(run_cli, env, ["nope", "--dir", d, "--cert", good_cert, "--key", good_key], "name-unknown")
    assert "'nope' is not declared" in message
    narrow, narrow_key = write("narrow", _leaf(ca, key, DOMAINS[:1]), key)
    message = _refused(run_cli, env, ["shop", "--dir", d, "--cert", narrow, "--key", narrow_key],
                       "import-domains-mismatch")  # fmt: skip
    assert "the certificate names shop.example.test; shop declares shop.example.test, www.shop.example.test" in message
    expired, expired_key = write("expired", _leaf(ca, key, DOMAINS, days=60, age=90), key)
    assert "expired on" in _refused(run_cli, env, ["shop", "--dir", d, "--cert", expired, "--key", expired_key],
                                    "import-expired")  # fmt: skip
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_cert, rsa_pem = write("rsa", _leaf(ca, rsa_key, DOMAINS), rsa_key)
    message = _refused(run_cli, env, ["shop", "--dir", d, "--cert", rsa_cert, "--key", rsa_pem],
                       "import-key-type-mismatch")  # fmt: skip
    assert "the key is rsa-2048; shop declares ecdsa-p256" in message
    (files / "garbage.crt").write_text("not a certificate\n")
    _refused(run_cli, env, ["shop", "--dir", d, "--cert", str(files / "garbage.crt"), "--key", good_key],
             "import-file-invalid")  # fmt: skip
    _refused(run_cli, env, ["shop", "--dir", d, "--from-dir", str(files)], "import-layout-unknown")
    (files / "other-ca.pem").write_bytes(_pem(_ca()[1]))
    message = _refused(run_cli, env, ["shop", "--dir", d, "--cert", good_cert, "--key", good_key, "--chain",
                                      str(files / "other-ca.pem")], "import-chain-mismatch")  # fmt: skip
    assert "which did not issue the certificate" in message
    _refused(run_cli, env, ["shop", "--dir", d, "--cert", good_cert], "usage")

    run_cli("import", "shop", "--dir", d, "--cert", good_cert, "--key", good_key, env=env, check_code=0)
    message = _refused(run_cli, env, ["shop", "--dir", d, "--cert", good_cert, "--key", good_key],
                       "import-name-managed")  # fmt: skip
    assert "already has a certificate in the state" in message


def test_import_of_what_an_nginx_serves_takes_the_chain_it_sends(
    run_cli: Runner, cli_env: dict[str, str], tmp_path: Path, nginx_server: Callable[..., Nginx]
) -> None:
    """The chain comes from the TLS handshake at the target's verify address, not from any file."""
    now = datetime.datetime.now(datetime.UTC)
    ca = _ca()
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = _leaf(ca, key, DOMAINS, now=now)
    nginx = nginx_server({"shop": DOMAINS})
    folder = nginx.cert_dir / "shop"
    (folder / "fullchain.pem").write_bytes(_pem(leaf) + _pem(ca[1]))
    (folder / "privkey.pem").write_bytes(_pem_key(key))
    os.kill(nginx.master_pid, signal.SIGHUP)
    fingerprint = leaf.fingerprint(hashes.SHA256()).hex()
    for _ in range(200):  # until the new workers serve it (the reload is asynchronous)
        if handshake_observation(nginx.address, DOMAINS[0]).fingerprint == fingerprint:
            break
        time.sleep(0.05)
    nginx.drained()  # the import's own handshake must not land on the old worker
    (folder / "fullchain.pem").write_text("")  # not from the files: from the handshake
    (folder / "privkey.pem").rename(tmp_path / "shop.key")
    desired = _desired(tmp_path)
    doc = yaml.safe_load((desired / "certreconcile.yaml").read_text())
    doc["targets"]["web"] = {"nginx": {"cert_dir": str(nginx.cert_dir), "test_command": nginx.test_command},
                             "verify": nginx.address}  # fmt: skip
    (desired / "certreconcile.yaml").write_text(yaml.safe_dump(doc))
    out = run_cli("import", "shop", "--dir", str(desired), "--from-target", "web", "--key", str(tmp_path / "shop.key"),
                  "--format", "json", env=cli_env, check_code=0)  # fmt: skip
    result = json.loads(out.stdout)
    assert (result["status"], result["verified_on"], result["fingerprint"]) == ("active", ["web"], fingerprint)
    with psycopg.connect(cli_env["CERTRECONCILE_DATABASE_URL"]) as conn:
        row = conn.execute("SELECT cert_pem, chain_pem, origin FROM Certificate").fetchone()
    assert row == (_pem(leaf).decode(), _pem(ca[1]).decode(), "imported")
    assert run_cli("plan", "--dir", str(desired), "--detailed-exitcode", env=cli_env).returncode == 0


def test_a_combined_pem_imports_and_deploys_a_clean_key(run_cli: Runner, env: dict[str, str], tmp_path: Path) -> None:
    """HAProxy's combined PEM (chain + key in one file, the key in the traditional RSA format) as --cert and --key."""
    ca = _ca()
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    leaf = _leaf(ca, key, DOMAINS)
    traditional = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                    serialization.NoEncryption())  # fmt: skip
    combined = tmp_path / "shop.pem"
    combined.write_bytes(_pem(leaf) + _pem(ca[1]) + traditional)
    d = str(_desired(tmp_path, key="rsa-2048"))
    run_cli("import", "shop", "--dir", d, "--cert", str(combined), "--key", str(combined), env=env, check_code=0)
    run_cli("apply", "--dir", d, "--auto-approve", env=env, check_code=0)
    deployed = (tmp_path / "web" / "shop" / "privkey.pem").read_bytes()
    assert deployed.startswith(b"-----BEGIN PRIVATE KEY-----") and b"CERTIFICATE" not in deployed
    assert (tmp_path / "web" / "shop" / "fullchain.pem").read_bytes() == _pem(leaf) + _pem(ca[1])
