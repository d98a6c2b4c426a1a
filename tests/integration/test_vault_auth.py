"""Logging in to Vault / OpenBao (``certreconcile.plugins.vault_auth``), through the vault KMS.

* Kubernetes auth: OpenBao's kubernetes method needs a cluster to check the service-account
  JWT, so a tiny local HTTP server plays Vault here: it checks the login request (path, jwt,
  role), hands out a token, and accepts the next call only with that token in X-Vault-Token.
* Re-login of an expired token: a real ``bao server -dev`` (``bao_transit``) with an AppRole
  whose tokens live 2 s.
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import hvac
import pydantic
import pytest

from certreconcile.errors import KmsError
from certreconcile.plugins.issuers.vault_pki_config import VaultPkiIssuerConfig
from certreconcile.plugins.kms.vault import VaultKms
from certreconcile.plugins.kms.vault_config import VaultKmsConfig
from certreconcile.plugins.ports import EncryptionContext
from kms_servers import BaoTransit

pytestmark = pytest.mark.integration

CONTEXT = EncryptionContext(table="certificate", row_id="row-1")


# ---------------------------------------------------------------- a fake Vault for kubernetes auth


@dataclass
class FakeVault:
    url: str
    role: str
    accepted_jwts: set[str]
    logins: list[dict[str, Any]] = field(default_factory=list)  # (path, body) of each login
    calls: list[tuple[str, str | None]] = field(default_factory=list)  # (path, X-Vault-Token) of each other call
    valid_tokens: set[str] = field(default_factory=set)

    def expire_tokens(self) -> None:
        self.valid_tokens.clear()


@pytest.fixture
def fake_vault() -> Iterator[FakeVault]:
    state = FakeVault(url="", role="certreconcile-pod", accepted_jwts=set())

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _answer(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
            if self.path.endswith("/login"):
                state.logins.append({"path": self.path, "body": body})
                if self.path != "/v1/auth/k8s-cluster/login" or body.get("role") != state.role:
                    self._answer(400, {"errors": ["invalid role name"]})
                elif body.get("jwt") not in state.accepted_jwts:
                    self._answer(403, {"errors": ["permission denied"]})
                else:
                    token = "hvs." + secrets.token_hex(12)
                    state.valid_tokens.add(token)
                    self._answer(200, {"auth": {"client_token": token, "lease_duration": 60, "renewable": True}})
                return
            token = self.headers.get("X-Vault-Token")
            state.calls.append((self.path, token))
            if token not in state.valid_tokens:
                self._answer(403, {"errors": ["permission denied"]})
            elif self.path == "/v1/transit/datakey/plaintext/certreconcile":
                self._answer(
                    200,
                    {
                        "data": {
                            "plaintext": base64.b64encode(b"k" * 32).decode(),
                            "ciphertext": "vault:v1:" + base64.b64encode(b"wrapped").decode(),
                        }
                    },
                )
            else:
                self._answer(404, {"errors": [f"no handler for route {self.path!r}"]})

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _kubernetes_kms(fake: FakeVault, token_path: Path) -> VaultKms:
    return VaultKms(
        url=fake.url,
        key="certreconcile",
        auth="kubernetes",
        kubernetes_role=fake.role,
        kubernetes_mount="k8s-cluster",
        kubernetes_token_path=token_path,
        env={},
    )


def test_kubernetes_login_then_token_used(fake_vault: FakeVault, tmp_path: Path) -> None:
    jwt = "eyJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(24) + ".sig"
    token_path = tmp_path / "token"
    token_path.write_text(jwt + "\n")  # kubelet's file; a trailing newline is not part of the JWT
    fake_vault.accepted_jwts.add(jwt)
    kms = _kubernetes_kms(fake_vault, token_path)

    dek, wrapped = kms.generate_data_key(CONTEXT)
    assert len(dek.reveal()) == 32 and wrapped.ciphertext.startswith(b"vault:v1:")
    assert fake_vault.logins == [
        {"path": "/v1/auth/k8s-cluster/login", "body": {"role": "certreconcile-pod", "jwt": jwt}}
    ]
    ((path, token),) = fake_vault.calls
    assert path == "/v1/transit/datakey/plaintext/certreconcile"
    assert token in fake_vault.valid_tokens  # the token the login returned, in X-Vault-Token
    kms.generate_data_key(CONTEXT)
    assert len(fake_vault.logins) == 1  # the token is kept

    # The token expires and kubelet rotated the JWT: one new login, with the file's new content.
    new_jwt = "eyJhbGciOiJSUzI1NiJ9." + secrets.token_urlsafe(24) + ".sig2"
    token_path.write_text(new_jwt)
    fake_vault.accepted_jwts = {new_jwt}
    fake_vault.expire_tokens()
    kms.generate_data_key(CONTEXT)
    assert [login["body"]["jwt"] for login in fake_vault.logins] == [jwt, new_jwt]
    assert kms.logins == 2
    assert fake_vault.calls[-1][1] in fake_vault.valid_tokens


def test_kubernetes_refused_jwt(fake_vault: FakeVault, tmp_path: Path) -> None:
    jwt = "eyJ.not-accepted-" + secrets.token_hex(8)
    (tmp_path / "token").write_text(jwt)
    with pytest.raises(KmsError) as caught:
        _kubernetes_kms(fake_vault, tmp_path / "token").generate_data_key(CONTEXT)
    assert caught.value.code == "kms-access-denied"
    assert "Kubernetes login" in caught.value.message
    assert jwt not in caught.value.one_line()


def test_kubernetes_missing_token_file(fake_vault: FakeVault, tmp_path: Path) -> None:
    with pytest.raises(KmsError) as caught:
        _kubernetes_kms(fake_vault, tmp_path / "absent").generate_data_key(CONTEXT)
    assert caught.value.code == "kms-credentials-missing"
    assert str(tmp_path / "absent") in caught.value.message
    assert fake_vault.logins == []


def test_kubernetes_needs_a_role_in_the_declaration() -> None:
    with pytest.raises(pydantic.ValidationError, match="kubernetes_role"):
        VaultKmsConfig(url="https://vault:8200", key="k", auth="kubernetes")
    config = VaultPkiIssuerConfig(url="https://vault:8200", role="web", auth="kubernetes", kubernetes_role="pod")
    assert config.kubernetes_mount == "kubernetes"
    assert config.kubernetes_token_path == "/var/run/secrets/kubernetes.io/serviceaccount/token"


# ---------------------------------------------------------------- re-login on a real OpenBao


def test_approle_token_expiry_logs_in_again(bao_transit: BaoTransit) -> None:
    client = hvac.Client(url=bao_transit.url, token=bao_transit.root_token)
    client.auth.approle.create_or_update_approle(
        "short-lived", token_policies=["certreconcile-kms"], token_ttl="2s", token_max_ttl="2s"
    )
    role_id = client.auth.approle.read_role_id("short-lived")["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id("short-lived")["data"]["secret_id"]
    kms = VaultKms(
        url=bao_transit.url,
        key=bao_transit.key,
        auth="approle",
        role_id_env="SHORT_ROLE",
        secret_id_env="SHORT_SECRET",
        env={"SHORT_ROLE": role_id, "SHORT_SECRET": secret_id},
    )
    dek, wrapped = kms.generate_data_key(CONTEXT)
    assert kms.logins == 1
    time.sleep(3)  # past token_max_ttl: the token is gone
    assert kms.decrypt_data_key(wrapped, CONTEXT) == dek
    assert kms.logins == 2
    kms.generate_data_key(CONTEXT)
    assert kms.logins == 2  # the fresh token is kept


def test_static_token_is_not_retried(bao_transit: BaoTransit) -> None:
    kms = VaultKms(url=bao_transit.url, key=bao_transit.key, env={"VAULT_TOKEN": "hvs.revoked-" + "x" * 12})
    with pytest.raises(KmsError) as caught:
        kms.generate_data_key(CONTEXT)
    assert caught.value.code == "kms-access-denied"
    assert kms.logins == 1


def test_real_permission_denied_is_retried_once_only(bao_transit: BaoTransit) -> None:
    """A policy that does not allow the call: one re-login, then the denial is reported."""
    client = hvac.Client(url=bao_transit.url, token=bao_transit.root_token)
    client.auth.approle.create_or_update_approle("no-transit", token_policies=["default"])
    role_id = client.auth.approle.read_role_id("no-transit")["data"]["role_id"]
    secret_id = client.auth.approle.generate_secret_id("no-transit")["data"]["secret_id"]
    kms = VaultKms(
        url=bao_transit.url,
        key=bao_transit.key,
        auth="approle",
        env={"VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID": secret_id},
    )
    with pytest.raises(KmsError) as caught:
        kms.generate_data_key(CONTEXT)
    assert caught.value.code == "kms-access-denied"
    assert kms.logins == 2
    assert secret_id not in caught.value.one_line()
