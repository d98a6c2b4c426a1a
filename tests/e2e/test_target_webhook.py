"""End to end: ``certreconcile apply`` with a local CA and a webhook target (a real mutual-TLS receiver)."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from certreconcile.domain.certs import read_cert_facts
from e2e.conftest import Runner
from engine import cert, desired_doc, write_desired
from webhook_servers import (
    CLIENT_COMMON_NAME,
    ClientIdentity,
    WebhookServer,
    make_client_identity,
    running_webhook_server,
    signature_valid,
)

SECRET = "e2e-hook-" + secrets.token_hex(12)


@pytest.fixture
def client_identity(tmp_path: Path) -> ClientIdentity:
    return make_client_identity(tmp_path / "client")


@pytest.fixture
def receiver(tmp_path: Path, client_identity: ClientIdentity) -> Iterator[WebhookServer]:
    with running_webhook_server(tmp_path / "receiver", client_identity) as server:
        yield server


def test_apply_delivers_to_a_webhook_and_audits_it(
    run_cli: Runner,
    cli_env: dict[str, str],
    tmp_path: Path,
    receiver: WebhookServer,
    client_identity: ClientIdentity,
) -> None:
    targets = {
        "hook": {
            "webhook": {
                "url": receiver.url("/certreconcile"),
                "secret_env": "HOOK_SECRET",
                "client_cert": str(client_identity.cert),
                "client_key": str(client_identity.key),
                "ca_bundle": str(receiver.ca),
            }
        }
    }
    directory = write_desired(tmp_path / "desired", desired_doc([cert("shop", targets=["hook"])], targets=targets))
    env = {**cli_env, "HOOK_SECRET": SECRET}
    d = str(directory)

    applied = run_cli("apply", "--dir", d, "--auto-approve", env=env, check_code=0)
    assert "1 done, 0 skipped, 0 failed" in applied.stdout

    assert len(receiver.received) == 1
    got = receiver.received[0]
    assert signature_valid(got, SECRET)
    assert got.client_common_name == CLIENT_COMMON_NAME
    body = got.json()
    assert body["name"] == "shop" and body["domains"] == ["shop.example.com"]
    assert read_cert_facts(body["certificate"]).fingerprint == body["fingerprint"]
    assert body["private_key"].startswith("-----BEGIN PRIVATE KEY-----")

    # A webhook cannot be asked what it serves: no drift is seen, nothing to do.
    run_cli("plan", "--dir", d, "--refresh", "--detailed-exitcode", env=env, check_code=0)

    audit_out = run_cli("audit", "--dir", d, "--format", "json", env=env, check_code=0).stdout
    events = json.loads(audit_out)
    for action in ("distributed", "verified"):
        assert [e for e in events if e["action"] == action and e["detail"].get("target") == "hook"], action
    verified = next(e for e in events if e["action"] == "verified")
    assert verified["detail"]["fingerprint"] == body["fingerprint"]
    key_body = "".join(line for line in body["private_key"].splitlines() if not line.startswith("-----"))
    for output in (audit_out, applied.stdout, applied.stderr):
        assert SECRET not in output
        assert key_body[:40] not in output and key_body[-40:] not in output
