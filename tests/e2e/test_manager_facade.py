"""The seed's facade, ``CertificateManager``, on its failure paths and ownership, against the real parts:
PostgreSQL, the local CA, ``files`` targets, the CLI (``apply``, ``status``) in a subprocess, and, for
the HTTP-01 self-check, the ACME issuer registered with Pebble and its standalone or webroot solver.
"""

from __future__ import annotations

import functools
import json
import re
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import psycopg
import pytest

from acme_servers import Pebble
from certreconcile import CertificateManager
from certreconcile.actual.store import AcmeOrderRecord
from certreconcile.clock import FixedClock
from certreconcile.errors import PolicyViolation, TargetFailed, VerificationFailed
from certreconcile.plugins.ports import IssuedCertificate, Issuer, IssueRequest
from e2e.conftest import Runner
from engine import cert, desired_doc, write_desired
from kms_servers import free_port, free_port_outside_ephemeral

pytestmark = pytest.mark.integration

ALLOWED = ["example.com", "*.example.com"]
API_NAME = "api-example-com"  # the facade's name for api.example.com
TOKEN = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA"


def facade_doc(marker: Path, **extra: Any) -> dict[str, Any]:
    """Three files targets; ``flaky`` fails its reload while ``marker`` exists (a real failing target)."""
    targets = {
        "deploy": {"files": {"dir": "out/deploy"}},
        "other": {"files": {"dir": "out/other"}},
        "flaky": {"files": {"dir": "out/flaky", "reload_command": f"test ! -e {marker}"}},
    }
    doc = desired_doc([cert("shop", "shop.example.com")], targets=targets, allowed=ALLOWED)
    doc.update(extra)
    return doc


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "flaky-is-broken"


@pytest.fixture
def certs_dir(tmp_path: Path, marker: Path) -> Path:
    return write_desired(tmp_path / "certs", facade_doc(marker))


@pytest.fixture
def manager(certs_dir: Path, cli_env: dict[str, str]) -> CertificateManager:
    return CertificateManager.from_directory(certs_dir, environ=cli_env)


def query(database_url: str, sql: str, *params: object) -> list[tuple[Any, ...]]:
    with psycopg.connect(database_url) as conn:
        return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]


# ------------------------------------------------------------------ verification failure


def test_rotation_not_verified_raises_and_leaves_the_rotation_open(
    manager: CertificateManager, marker: Path, database_url: str
) -> None:
    record = manager.issue_certificate(["api.example.com"], acme_provider="internal")
    manager.distribute_certificate(record.id, ["deploy", "flaky"])
    marker.touch()  # from now on, flaky's reload fails
    with pytest.raises(VerificationFailed) as caught:
        manager.rotate_certificate(record.id)
    error = caught.value
    assert error.code == "verification-failed"
    assert error.targets == ("flaky",)
    assert "target-reload-failed" in error.failures["flaky"]
    assert error.cert_id != record.id
    rotations = query(
        database_url, "SELECT cert_id::text, new_cert_id::text, completed_at FROM CertRotation WHERE cert_id = %s",
        record.id,
    )  # fmt: skip
    assert rotations == [(record.id, error.cert_id, None)]  # open
    statuses = dict(query(database_url, "SELECT id::text, status FROM Certificate WHERE name = %s", API_NAME))
    assert statuses == {record.id: "rotating", error.cert_id: "issued"}  # the old one is not superseded
    # Once the target is fixed, distributing the new certificate there closes the rotation.
    marker.unlink()
    manager.distribute_certificate(error.cert_id, ["flaky"])
    closed = query(database_url, "SELECT completed_at FROM CertRotation WHERE cert_id = %s", record.id)
    assert closed[0][0] is not None
    statuses = dict(query(database_url, "SELECT id::text, status FROM Certificate WHERE name = %s", API_NAME))
    assert statuses == {record.id: "superseded", error.cert_id: "active"}


# ------------------------------------------------------------------ target failure


def test_a_failed_target_does_not_block_later_distributes_to_the_others(
    manager: CertificateManager, marker: Path, certs_dir: Path
) -> None:
    record = manager.issue_certificate(["api.example.com"], acme_provider="internal")
    marker.touch()
    with pytest.raises(TargetFailed) as caught:
        manager.distribute_certificate(record.id, ["deploy", "flaky"])
    assert caught.value.code == "distribution-failed"
    assert caught.value.targets == ("flaky",)  # deploy is not named: it worked
    assert "target-reload-failed" in caught.value.failures["flaky"]
    assert (certs_dir / "out" / "deploy" / API_NAME / "cert.pem").exists()
    # flaky still fails, but distributes to the others go through, again and again.
    assert manager.distribute_certificate(record.id, ["other"]) is None
    assert (certs_dir / "out" / "other" / API_NAME / "privkey.pem").exists()
    (certs_dir / "out" / "deploy" / API_NAME / "privkey.pem").unlink()
    assert manager.distribute_certificate(record.id, ["deploy"]) is None
    assert (certs_dir / "out" / "deploy" / API_NAME / "privkey.pem").exists()


# ------------------------------------------------------------------ policy and budgets


class CountingIssuer:
    """The real issuer, counting the calls that reach it."""

    def __init__(self, inner: Issuer) -> None:
        self.inner = inner
        self.name = inner.name
        self.calls = 0

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.inner, attribute)

    def issue(self, request: IssueRequest) -> IssuedCertificate:
        self.calls += 1
        return self.inner.issue(request)


def test_a_domain_outside_policy_raises_before_any_issuance(manager: CertificateManager, database_url: str) -> None:
    counting = CountingIssuer(manager.acme["internal"])
    manager.acme = {"internal": counting}  # type: ignore[dict-item]
    for domains in (["evil.org"], ["api.example.com", "www.evil.org"]):
        with pytest.raises(PolicyViolation) as caught:
            manager.issue_certificate(domains, acme_provider="internal")
        assert caught.value.code == "domain-not-allowed"
        assert "evil.org" in caught.value.message
    assert counting.calls == 0
    assert query(database_url, "SELECT count(*) FROM Certificate") == [(0,)]
    assert query(database_url, "SELECT count(*) FROM CertAudit") == [(0,)]
    assert query(database_url, "SELECT count(*) FROM ApplyRun") == [(0,)]
    assert query(database_url, "SELECT count(*) FROM LocalCa") == [(0,)]  # the CA was never set up
    manager.issue_certificate(["api.example.com"], acme_provider="internal")  # inside the policy: issued
    assert counting.calls == 1


def test_the_lets_encrypt_budget_applies_before_issuance(
    tmp_path: Path, marker: Path, cli_env: dict[str, str], database_url: str
) -> None:
    letsencrypt = {"acme": {"directory": "letsencrypt", "email": "ops@example.com"}}
    doc = facade_doc(marker)
    doc["issuers"] = {**doc["issuers"], "le": letsencrypt}
    directory = write_desired(tmp_path / "certs", doc)
    now = datetime.now(UTC)  # the database filters its history by its own clock
    manager = CertificateManager.from_directory(directory, clock=FixedClock(now), environ=cli_env)
    directory_url = "https://acme-v02.api.letsencrypt.org/directory"
    with manager.db.session() as session:
        for index in range(300):  # the account's new-orders budget for 3 hours, all used
            record = AcmeOrderRecord(f"past-{index}", "past", f"{directory_url}/order/{index}", "valid", directory_url)
            session.save_acme_order(record, now)
    with pytest.raises(PolicyViolation) as caught:
        manager.issue_certificate(["api.example.com"], acme_provider="le")  # no network: refused before
    assert caught.value.code == "rate-limit-new-orders"
    assert query(database_url, "SELECT count(*) FROM Certificate") == [(0,)]


# ------------------------------------------------------------------ ownership


def test_an_api_issued_name_survives_a_git_apply_and_status_shows_its_owner(
    manager: CertificateManager, certs_dir: Path, run_cli: Runner, database_url: str
) -> None:
    d = str(certs_dir)
    run_cli("apply", "--dir", d, "--auto-approve", check_code=0)  # the declared `shop`
    record = manager.issue_certificate(["api.example.com"], acme_provider="internal")
    assert query(database_url, "SELECT name, origin FROM Certificate ORDER BY name") == [
        (API_NAME, "api"),
        ("shop", "git"),
    ]
    plan = run_cli("plan", "--dir", d, "--detailed-exitcode")
    assert plan.returncode == 0, plan.stdout + plan.stderr  # nothing to do: the API's name is not retired
    run_cli("apply", "--dir", d, "--auto-approve", check_code=0)
    current = query(database_url, "SELECT id::text, retired_at, status FROM Certificate WHERE name = %s", API_NAME)
    assert current == [(record.id, None, "active")]
    status = json.loads(run_cli("status", "--dir", d, "--format", "json", check_code=0).stdout)
    owners = {row["name"]: (row["owner"], row["flags"]) for row in status["certificates"]}
    assert owners == {API_NAME: ("api", ["owner:api"]), "shop": ("git", [])}
    table = run_cli("status", "--dir", d, check_code=0).stdout
    assert re.search(rf"^{API_NAME} .* owner:api$", table, re.MULTILINE), table
    # Rotated through the facade, it stays the API's.
    manager.rotate_certificate(record.id)
    assert query(database_url, "SELECT DISTINCT origin FROM Certificate WHERE name = %s", API_NAME) == [("api",)]


# ------------------------------------------------------------------ HTTP-01 self-check


class _Recording(SimpleHTTPRequestHandler):
    served: list[tuple[str, bytes]]

    def do_GET(self) -> None:
        path = Path(self.translate_path(self.path))
        body = path.read_bytes() if path.is_file() else b""
        self.served.append((self.headers.get("Host", ""), body))
        super().do_GET()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def webroot_server(tmp_path: Path) -> Iterator[tuple[Path, str, list[tuple[str, bytes]]]]:
    root = tmp_path / "webroot"
    root.mkdir()
    served: list[tuple[str, bytes]] = []
    handler = type("Handler", (_Recording,), {"served": served})
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}", served
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def acme_manager(
    tmp_path: Path, pebble: Pebble, http01: dict[str, Any], cli_env: dict[str, str], base_url: str
) -> CertificateManager:
    doc = desired_doc([], allowed=ALLOWED)
    doc["issuers"]["pebble"] = {
        "acme": {
            "directory": pebble.directory_url,
            "email": "ops@example.com",
            "ca_bundle": str(pebble.ca_bundle),
            "http01": http01,
        }
    }
    directory = write_desired(tmp_path / "acme-certs", doc)
    return CertificateManager.from_directory(directory, environ=cli_env, challenge_base_url=base_url)


def _key_authorization_shape(body: bytes) -> None:
    token, _, thumbprint = body.decode().partition(".")
    assert token == TOKEN
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}", thumbprint), body  # base64url SHA-256 of the account key


def test_validate_acme_challenge_serves_the_key_authorization_from_the_webroot(
    tmp_path: Path,
    pebble: Pebble,
    cli_env: dict[str, str],
    webroot_server: tuple[Path, str, list[tuple[str, bytes]]],
) -> None:
    root, url, served = webroot_server
    manager = acme_manager(tmp_path, pebble, {"webroot": {"path": str(root)}}, cli_env, url)
    assert manager.validate_acme_challenge("a.example.com", TOKEN) is True
    [(host, body)] = served
    assert host == "a.example.com"  # fetched as the CA would: for the domain
    _key_authorization_shape(body)
    assert body.decode() != TOKEN  # the key authorization, not the bare token
    assert not (root / ".well-known" / "acme-challenge" / TOKEN).exists()  # cleaned up
    # The same key authorization every time (the account's), and False when the domain serves elsewhere.
    assert manager.validate_acme_challenge("a.example.com", TOKEN) is True
    assert served[1][1] == body
    elsewhere = acme_manager(tmp_path, pebble, {"webroot": {"path": str(tmp_path / "nowhere")}}, cli_env, url)
    assert elsewhere.validate_acme_challenge("a.example.com", TOKEN) is False  # 404 on the real server
    assert not (tmp_path / "nowhere" / ".well-known" / "acme-challenge" / TOKEN).exists()


def test_validate_acme_challenge_on_the_standalone_solver(
    tmp_path: Path, pebble: Pebble, cli_env: dict[str, str]
) -> None:
    port = free_port_outside_ephemeral()
    standalone = {"standalone": {"listen": f"127.0.0.1:{port}"}}
    manager = acme_manager(tmp_path, pebble, standalone, cli_env, f"http://127.0.0.1:{port}")
    assert manager.validate_acme_challenge("a.example.com", TOKEN) is True
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # cleaned up: the solver no longer listens
    closed = free_port()  # nothing listens where the domain points: the check fails, and cleans up
    wrong = acme_manager(tmp_path, pebble, standalone, cli_env, f"http://127.0.0.1:{closed}")
    assert wrong.validate_acme_challenge("a.example.com", TOKEN) is False
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass


def test_validate_acme_challenge_needs_an_http01_issuer(manager: CertificateManager) -> None:
    from certreconcile.errors import CertReconcileError

    with pytest.raises(CertReconcileError) as caught:
        manager.validate_acme_challenge("a.example.com", TOKEN)  # only the local CA is declared
    assert caught.value.code == "challenge-solver-missing"
