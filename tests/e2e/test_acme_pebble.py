"""ACME issuance end to end: ``certreconcile apply`` against Pebble with real HTTP-01 validation.

Pebble resolves every name through pebble-challtestsrv's DNS (all names → 127.0.0.1) and
connects to ``http01_port`` on 127.0.0.1, where the standalone solver (or a web server
serving the webroot) answers. The issued chains verify against Pebble's root, read from its
management API.
"""

from __future__ import annotations

import base64
import functools
import http.server
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from acme_servers import AriProxy, ChallTestSrv, Pebble, start_pebble
from e2e.conftest import Runner

pytestmark = pytest.mark.integration


def acme_doc(pebble: Pebble, certificates: list[dict[str, Any]], **acme: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "directory": pebble.directory_url,
        "email": "ops@example.com",
        "ca_bundle": str(pebble.ca_bundle),
        "http01": {"standalone": {"listen": f"127.0.0.1:{pebble.http01_port}"}},
        "order_timeout": "60s",
    }
    config.update(acme)
    return {
        "kms": {"local": {}},
        "issuers": {"pebble": {"acme": config}},
        "targets": {"deploy": {"files": {"dir": "out"}}},
        "certificates": certificates,
    }


def write(directory: Path, doc: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "certificates.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return directory


def verify_chain(pebble: Pebble, folder: Path, tmp_path: Path) -> str:
    """``openssl verify`` of the deployed leaf against Pebble's root; returns openssl's answer."""
    root = tmp_path / "pebble-root.pem"
    root.write_text(pebble.root_pem())
    result = subprocess.run(
        ["openssl", "verify", "-CAfile", str(root), "-untrusted", str(folder / "chain.pem"), str(folder / "cert.pem")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def subject_names(pem_file: Path) -> set[str]:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem_file.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return set(names.get_values_for_type(x509.DNSName))


def test_http01_standalone_issues_a_chain_that_verifies(
    pebble: Pebble, run_cli: Runner, tmp_path: Path, database_url: str
) -> None:
    desired = write(
        tmp_path / "repo",
        acme_doc(pebble, [{"name": "shop", "issuer": "pebble", "targets": ["deploy"],
                           "domains": ["shop.pebble.test", "www.shop.pebble.test", "api.shop.pebble.test"]}]),
    )  # fmt: skip
    plan = run_cli("plan", "--dir", str(desired), check_code=0)
    assert "+ issue" in plan.stdout or "issue" in plan.stdout
    result = run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=0)
    assert "shop" in result.stdout
    folder = desired / "out" / "shop"
    assert "OK" in verify_chain(pebble, folder, tmp_path)
    assert subject_names(folder / "cert.pem") == {"shop.pebble.test", "www.shop.pebble.test", "api.shop.pebble.test"}
    assert (folder / "privkey.pem").stat().st_mode & 0o777 == 0o600
    # One account for the directory, its key sealed; one order, finished.
    with psycopg.connect(database_url) as conn:
        accounts = conn.execute("SELECT directory_url, key_ref, account_url FROM AcmeAccount").fetchall()
        orders = conn.execute("SELECT name, state, order_url FROM AcmeOrder").fetchall()
    assert [(row[0], row[2].startswith("https://127.0.0.1")) for row in accounts] == [(pebble.directory_url, True)]
    assert "PRIVATE KEY" not in accounts[0][1]
    assert [(row[0], row[1]) for row in orders] == [("shop", "valid")]
    # The standalone server listened only while the order was open.
    import socket

    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", pebble.http01_port), timeout=1):
        pass
    # Idempotent: a second apply changes nothing and orders nothing.
    run_cli("plan", "--dir", str(desired), "--detailed-exitcode", check_code=0)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM AcmeOrder").fetchone() == (1,)


def test_a_first_domain_over_64_characters_issues(
    pebble: Pebble, run_cli: Runner, tmp_path: Path
) -> None:
    from cryptography import x509

    long = "a" * 58 + ".pebble.test"  # 70 characters: more than a subject CN may hold
    domains = [long, "short.pebble.test"]
    desired = write(tmp_path / "repo", acme_doc(pebble, [{"name": "long", "issuer": "pebble",
                                                          "targets": ["deploy"], "domains": domains}]))  # fmt: skip
    run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=0)
    folder = desired / "out" / "long"
    assert subject_names(folder / "cert.pem") == set(domains)
    # The CSR's CN is the first name that fits; the CA has the last word (Pebble takes the order's
    # first identifier, Let's Encrypt one that fits or none), so only "one of the names" is certain.
    cert = x509.load_pem_x509_certificate((folder / "cert.pem").read_bytes())
    common_names = [str(a.value) for a in cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)]
    assert set(common_names) <= set(domains), common_names


@pytest.fixture
def webroot_server(pebble: Pebble, tmp_path: Path) -> Iterator[Path]:
    """A plain web server on Pebble's HTTP-01 port serving a document root (as nginx would)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", pebble.http01_port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_http01_webroot_writes_and_removes_the_token(
    pebble: Pebble, run_cli: Runner, tmp_path: Path, webroot_server: Path
) -> None:
    desired = write(
        tmp_path / "repo",
        acme_doc(pebble, [{"name": "blog", "domains": ["blog.pebble.test"], "issuer": "pebble", "targets": ["deploy"]}],
                 http01={"webroot": {"path": str(webroot_server)}}),
    )  # fmt: skip
    run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=0)
    verify_chain(pebble, desired / "out" / "blog", tmp_path)
    challenge_dir = webroot_server / ".well-known" / "acme-challenge"
    assert challenge_dir.is_dir()  # the token was written there...
    assert list(challenge_dir.iterdir()) == []  # ...and removed afterwards


def test_validation_failure_is_reported_and_backs_off(
    pebble: Pebble, run_cli: Runner, tmp_path: Path, database_url: str
) -> None:
    """A webroot nobody serves: Pebble's validation fails; apply exits 1 with the CA's reason."""
    desired = write(
        tmp_path / "repo",
        acme_doc(pebble, [{"name": "broken", "domains": ["broken.pebble.test"], "issuer": "pebble"}],
                 http01={"webroot": {"path": str(tmp_path / "unserved")}}),
    )  # fmt: skip
    result = run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=1)
    output = result.stdout + result.stderr
    assert "broken" in output and "acme-validation-failed" in output, output
    assert not list((tmp_path / "unserved" / ".well-known" / "acme-challenge").iterdir())  # cleaned up on failure
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM Certificate").fetchone() == (0,)
        assert conn.execute("SELECT failures FROM IssuanceBackoff WHERE name = 'broken'").fetchone() == (1,)


def _ari_id_by_certbot(cert_pem: str) -> str:
    """The ARI certificate id as certbot's acme package computes it (an independent oracle)."""
    from acme.client import _renewal_info_path_component
    from cryptography import x509

    return str(_renewal_info_path_component(x509.load_pem_x509_certificate(cert_pem.encode())))


def test_ari_window_schedules_the_renewal_and_the_order_replaces_the_old_certificate(
    ari_proxy: AriProxy, pebble: Pebble, run_cli: Runner, tmp_path: Path, database_url: str
) -> None:
    doc = acme_doc(
        pebble,
        [
            {"name": "shop", "domains": ["shop.ari.test"], "issuer": "pebble", "targets": ["deploy"]},
            {"name": "api", "domains": ["api.ari.test"], "issuer": "pebble", "targets": ["deploy"]},
        ],
        directory=ari_proxy.directory_url,
        ca_bundle=str(ari_proxy.ca_bundle),
        profile="shortlived",
    )
    desired = write(tmp_path / "repo", doc)
    run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=0)
    assert [order.get("replaces") for order in ari_proxy.new_orders] == [None, None]
    assert {order.get("profile") for order in ari_proxy.new_orders} == {"shortlived"}  # passed through
    old_pem = {name: (desired / "out" / name / "cert.pem").read_text() for name in ("shop", "api")}

    # A window in the future: nothing to do yet (Pebble's certificates live for years: the
    # declared renewal window alone would not renew them for a long time either).
    now = datetime.now(UTC)
    ari_proxy.retry_after = 0  # ask again at every run
    ari_proxy.window = (now + timedelta(days=10), now + timedelta(days=11))
    run_cli("plan", "--dir", str(desired), "--refresh", "--detailed-exitcode", check_code=0)
    assert set(ari_proxy.renewal_info_asked) == {_ari_id_by_certbot(pem) for pem in old_pem.values()}

    # The CA moves the window into the past (say, a mass revocation is coming): renew now.
    ari_proxy.window = (now - timedelta(hours=2), now - timedelta(minutes=1))
    plan = run_cli("plan", "--dir", str(desired), "--refresh", "--detailed-exitcode", check_code=2)
    assert "~ rotate shop" in plan.stdout and "~ rotate api" in plan.stdout, plan.stdout
    assert "renewal window (ARI)" in plan.stdout
    with psycopg.connect(database_url) as conn:  # plan --refresh asked, and stored nothing
        assert conn.execute("SELECT count(*) FROM AcmeRenewalInfo").fetchone() == (0,)
    # The CA says api's old certificate was already replaced: that order goes without `replaces`.
    ari_proxy.already_replaced = {_ari_id_by_certbot(old_pem["api"])}
    result = run_cli("apply", "--dir", str(desired), "--auto-approve", "--concurrency", "1")
    assert result.returncode == 0, result.stdout[-1500:] + result.stderr
    renewals = {str(order["identifiers"][0]["value"]): order.get("replaces") for order in ari_proxy.new_orders[2:]}  # type: ignore[index]
    assert renewals["shop.ari.test"] == _ari_id_by_certbot(old_pem["shop"])
    assert len([o for o in ari_proxy.new_orders[2:] if o["identifiers"][0]["value"] == "api.ari.test"]) == 2  # type: ignore[index]
    assert renewals["api.ari.test"] is None  # the retry after alreadyReplaced
    with psycopg.connect(database_url) as conn:
        rows = dict(
            conn.execute("SELECT name, ari_replaces FROM Certificate WHERE status = 'active' ORDER BY name").fetchall()
        )
        stored = conn.execute(
            "SELECT c.status, count(*) FROM AcmeRenewalInfo a JOIN Certificate c ON c.id = a.cert_id GROUP BY 1"
        ).fetchall()
    assert rows == {"api": None, "shop": _ari_id_by_certbot(old_pem["shop"])}
    # apply superseded both certificates: whatever windows it stored for them went with them (migration 0020),
    # and the new certificates were not asked about yet
    assert stored == []


@pytest.fixture
def slow_webroot_server(pebble: Pebble, tmp_path: Path) -> Iterator[Path]:
    """A web server on Pebble's HTTP-01 port that takes 3 s to answer: validation is slow."""
    root = tmp_path / "slow-www"
    root.mkdir()

    class Slow(http.server.SimpleHTTPRequestHandler):
        def do_GET(self) -> None:
            time.sleep(3)
            super().do_GET()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", pebble.http01_port), functools.partial(Slow, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_killed_after_ordering_resumes_the_same_order(
    pebble: Pebble,
    run_cli: Runner,
    cli_env: dict[str, str],
    tmp_path: Path,
    database_url: str,
    slow_webroot_server: Path,
) -> None:
    """SIGKILL between placing the order and storing the certificate; the rerun finishes that order."""
    desired = write(
        tmp_path / "repo",
        acme_doc(pebble, [{"name": "crash", "domains": ["crash.pebble.test"], "issuer": "pebble",
                           "targets": ["deploy"]}],
                 http01={"webroot": {"path": str(slow_webroot_server)}}),
    )  # fmt: skip
    process = subprocess.Popen(
        [sys.executable, "-m", "certreconcile", "apply", "--dir", str(desired), "--auto-approve"],
        env=cli_env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 60
    try:
        while True:
            with psycopg.connect(database_url) as conn:
                orders = conn.execute("SELECT order_url FROM AcmeOrder WHERE order_url IS NOT NULL").fetchall()
                stored = conn.execute("SELECT count(*) FROM Certificate").fetchone()
            if orders:
                break
            assert process.poll() is None, f"apply ended before it placed the order: {process.communicate()[0]}"
            assert time.monotonic() < deadline, "no order was placed within 60 s"
            time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
    assert stored == (0,), "the certificate was stored before the kill: the test did not test resumption"
    first_order = orders[0][0]

    run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=0)
    verify_chain(pebble, desired / "out" / "crash", tmp_path)
    with psycopg.connect(database_url) as conn:
        certificates = conn.execute("SELECT id::text FROM Certificate WHERE name = 'crash'").fetchall()
        orders_after = conn.execute("SELECT order_url, state, cert_id::text FROM AcmeOrder").fetchall()
        placed = conn.execute(
            "SELECT count(*) FROM ApplyStep WHERE name = 'crash' AND step = 'order-created'"
        ).fetchone()
    assert len(certificates) == 1
    assert orders_after == [(first_order, "valid", certificates[0][0])]  # the same order, finished
    assert placed == (1,)  # one order ever placed for this change


def test_revoke_reaches_pebble_with_its_reason(
    pebble: Pebble, run_cli: Runner, tmp_path: Path, database_url: str
) -> None:
    desired = write(
        tmp_path / "repo",
        acme_doc(pebble, [{"name": "leaked", "domains": ["leaked.pebble.test"], "issuer": "pebble",
                           "targets": ["deploy"]}]),
    )  # fmt: skip
    run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=0)
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT serial_number FROM Certificate WHERE name = 'leaked'").fetchone()
    assert row is not None
    serial = row[0]
    assert pebble.cert_status(serial)["Status"] == "Valid"

    # The files target still holds it: refused without --force, and nothing reached the CA.
    refused = run_cli("revoke", "leaked", "--dir", str(desired), "--reason", "keyCompromise", check_code=1)
    assert "error[revoke-still-served]" in refused.stderr
    assert pebble.cert_status(serial)["Status"] == "Valid"

    run_cli("revoke", "leaked", "--dir", str(desired), "--reason", "keyCompromise", "--force", check_code=0)
    status = pebble.cert_status(serial)
    assert status["Status"] == "Revoked", status
    assert status.get("Reason") in (None, 1), status  # RFC 5280 keyCompromise = 1 where Pebble reports it
    audit = run_cli("audit", "--dir", str(desired), "--name", "leaked", "--format", "json", check_code=0)
    revoked = [event for event in json.loads(audit.stdout) if event["action"] == "revoked"]
    assert [event["detail"]["reason"] for event in revoked] == ["keyCompromise"]
    # The name is still declared: the next plan rotates it.
    plan = run_cli("plan", "--dir", str(desired), "--detailed-exitcode", check_code=2)
    assert "~ rotate leaked" in plan.stdout


def test_kms_rewrap_moves_the_acme_account_key_and_the_account_keeps_working(
    pebble: Pebble, run_cli: Runner, cli_env: dict[str, str], tmp_path: Path, database_url: str
) -> None:
    desired = write(
        tmp_path / "repo",
        acme_doc(pebble, [{"name": "moved", "domains": ["moved.pebble.test"], "issuer": "pebble",
                           "targets": ["deploy"]}]),
    )  # fmt: skip
    run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=0)
    with psycopg.connect(database_url) as conn:
        before = conn.execute("SELECT account_url, key_ref FROM AcmeAccount").fetchall()
    new_key = tmp_path / "keys" / "new.key"
    to = tmp_path / "new-kms.yaml"
    to.write_text(yaml.safe_dump({"kms": {"local": {"key_file": str(new_key)}}}))
    moved = run_cli("kms", "rewrap", "--dir", str(desired), "--to", str(to), check_code=0)
    # The certificate, its journalled key and the ACME account key.
    assert "rewrapped 3, skipped 0, failed 0" in moved.stdout, moved.stdout
    with psycopg.connect(database_url) as conn:
        after = conn.execute("SELECT account_url, key_ref FROM AcmeAccount").fetchall()
    assert len(after) == 1
    assert after[0][0] == before[0][0]
    assert after[0][1] != before[0][1]
    assert json.loads(after[0][1])["ciphertext"] == json.loads(before[0][1])["ciphertext"]  # only the DEK moved

    # Under the new key only, a forced rotation signs its order with the same (unwrapped) account.
    env = {**cli_env, "CERTRECONCILE_LOCAL_KMS_KEY_FILE": str(new_key)}
    run_cli("rotate", "moved", "--dir", str(desired), env=env, check_code=0)
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT account_url FROM AcmeAccount").fetchall() == [(before[0][0],)]
        assert conn.execute("SELECT count(*) FROM Certificate WHERE name = 'moved'").fetchone() == (2,)
    verify_chain(pebble, desired / "out" / "moved", tmp_path)


@pytest.fixture
def pebble_with_eab(tmp_path: Path, challtestsrv: ChallTestSrv) -> Iterator[tuple[Pebble, str, str]]:
    key_id, hmac_key = "kid-certreconcile", base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    with start_pebble(tmp_path / "pebble-eab", challtestsrv.dns_address, eab_keys={key_id: hmac_key}) as server:
        yield server, key_id, hmac_key


def test_external_account_binding_from_the_environment(
    pebble_with_eab: tuple[Pebble, str, str], run_cli: Runner, cli_env: dict[str, str], tmp_path: Path
) -> None:
    pebble, key_id, hmac_key = pebble_with_eab
    desired = write(
        tmp_path / "repo",
        acme_doc(pebble, [{"name": "bound", "domains": ["bound.pebble.test"], "issuer": "pebble",
                           "targets": ["deploy"]}],
                 eab={"key_id_env": "ACME_EAB_KID", "hmac_key_env": "ACME_EAB_HMAC"}),
    )  # fmt: skip
    # Without the variables: a clear error naming them, nothing issued, no secret printed.
    missing = run_cli("apply", "--dir", str(desired), "--auto-approve", check_code=1)
    assert "ACME_EAB_KID" in missing.stdout + missing.stderr
    # A wrong HMAC key: the CA refuses the binding.
    wrong = {**cli_env, "ACME_EAB_KID": key_id, "ACME_EAB_HMAC": base64.urlsafe_b64encode(b"x" * 32).decode()}
    # (The failure backs the name off; `rotate` tries again at once.)
    refused = run_cli("rotate", "bound", "--dir", str(desired), env=wrong, check_code=1)
    assert "acme-account" in refused.stdout + refused.stderr
    env = {**cli_env, "ACME_EAB_KID": key_id, "ACME_EAB_HMAC": hmac_key}
    result = run_cli("rotate", "bound", "--dir", str(desired), env=env, check_code=0)
    assert hmac_key not in result.stdout + result.stderr
    verify_chain(pebble, desired / "out" / "bound", tmp_path)
