"""Vault / OpenBao transit: a data key per private key, bound to its row as associated data.

``POST <mount>/datakey/plaintext/<key>`` with ``associated_data`` = the row's AAD returns a
fresh 256-bit data key and its ciphertext (``vault:vN:...``); only the ciphertext is kept.
``decrypt`` with the same associated data unwraps it: AES-256-GCM in transit refuses any
other row, table, key version or purpose. The transit key must be ``aes256-gcm96`` (the
default type). A server that silently ignores ``associated_data`` (older than Vault 1.15 /
OpenBao 2) is refused, so an unbound data key is never stored.

hvac is imported only when a key is first wrapped or unwrapped: building the adapter does
no I/O and reads no credentials. Login, TLS and the re-login of an expired AppRole or
Kubernetes token are :class:`~certreconcile.plugins.vault_auth.VaultConnection`'s, shared
with the ``vault_pki`` issuer. Token from ``VAULT_TOKEN`` (or ``BAO_TOKEN``); AppRole ids from
the environment variables the configuration names; Kubernetes: the pod's service-account
token file and ``kubernetes_role``.

Errors are :class:`~certreconcile.errors.KmsError` with a stable code; they name the
server (``scheme://host:port``) and the HTTP status, never tokens, ids or key bytes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from pathlib import Path
from typing import Any, assert_never

from certreconcile.errors import KmsError
from certreconcile.plugins.ports import EncryptionContext, SecretBytes, WrappedKey
from certreconcile.plugins.vault_auth import (
    DEFAULT_KUBERNETES_TOKEN_PATH,
    VaultAuthMethod,
    VaultCallError,
    VaultConnection,
    VaultLogin,
    VaultProblem,
    login_hint,
)

__all__ = ["VaultKms"]

_DEK_BYTES = 32


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class VaultKms:
    name = "vault"

    def __init__(
        self,
        *,
        url: str,
        key: str,
        mount: str = "transit",
        auth: VaultAuthMethod = "token",
        role_id_env: str = "VAULT_ROLE_ID",
        secret_id_env: str = "VAULT_SECRET_ID",  # noqa: S107 - the name of a variable, not a secret
        kubernetes_role: str | None = None,
        kubernetes_mount: str = "kubernetes",
        kubernetes_token_path: Path = DEFAULT_KUBERNETES_TOKEN_PATH,
        namespace: str | None = None,
        ca_bundle: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        self._key = key
        self._mount = mount.strip("/")
        self._connection = VaultConnection(
            url=url,
            login=VaultLogin(
                method=auth,
                role_id_env=role_id_env,
                secret_id_env=secret_id_env,
                kubernetes_role=kubernetes_role,
                kubernetes_mount=kubernetes_mount,
                kubernetes_token_path=kubernetes_token_path,
            ),
            label="the vault KMS",
            namespace=namespace,
            ca_bundle=ca_bundle,
            env=env,
            timeout=timeout,
        )

    @property
    def key_id(self) -> str:
        """The transit key, as recorded in envelopes (the key version is inside the ciphertext)."""
        return f"{self._mount}/{self._key}"

    @property
    def logins(self) -> int:
        """How many times this adapter logged in: 1 after the first call, more after expired tokens."""
        return self._connection.logins

    @property
    def _where(self) -> str:
        return self._connection.where

    # ------------------------------------------------------------------ calls

    def _error(self, error: VaultCallError) -> KmsError:
        """The KmsError (stable code, hint) for a failed call."""
        message = error.message
        login = login_hint(error, self._connection.method)  # the hint shared by every Vault plug-in
        match error.problem:
            case VaultProblem.SDK_MISSING:
                return KmsError(message, code="kms-sdk-missing", hint=login)
            case VaultProblem.CREDENTIALS_MISSING:
                return KmsError(message, code="kms-credentials-missing", hint=login)
            case VaultProblem.LOGIN_REFUSED:
                return KmsError(message, code="kms-access-denied", hint=login)
            case VaultProblem.ACCESS_DENIED:
                return KmsError(
                    message,
                    code="kms-access-denied",
                    hint=f"the token needs update on {self._mount}/datakey/plaintext/{self._key} "
                    f"and {self._mount}/decrypt/{self._key} (and {self._mount}/encrypt/{self._key} for rewrap)",
                )
            case VaultProblem.INVALID_REQUEST:
                return self._refused(error)
            case (
                VaultProblem.NOT_FOUND
                | VaultProblem.THROTTLED
                | VaultProblem.UNAVAILABLE
                | VaultProblem.TLS
                | VaultProblem.FAILED
            ):
                return self._server_error(error)
            case _:  # pragma: no cover
                assert_never(error.problem)

    def _refused(self, error: VaultCallError) -> KmsError:
        """Vault refused the request (400): what it refused, from its error text."""
        message = error.message
        text = " ".join(error.server_errors).lower()
        if "not found" in text:
            return KmsError(message, code="kms-key-not-found", hint=f"create the transit key {self.key_id}")
        if "authentication failed" in text or "invalid ciphertext" in text or "decode" in text:
            return KmsError(
                message,
                code="kms-decrypt-failed",
                hint="the stored key_ref belongs to another row or was altered",
            )
        return KmsError(message, code="kms-error", hint="see the Vault server log")

    def _server_error(self, error: VaultCallError) -> KmsError:
        """The key or mount missing, throttling, the server or the TLS handshake failing."""
        message = error.message
        if error.problem is VaultProblem.NOT_FOUND:
            return KmsError(
                message,
                code="kms-key-not-found",
                hint=f"enable transit at {self._mount}/ and create the key {self._key}",
            )
        if error.problem is VaultProblem.THROTTLED:
            return KmsError(message, code="kms-throttled")
        if error.problem is VaultProblem.UNAVAILABLE:
            hint = (
                "unseal the server or retry later"
                if error.status != "?"
                else "check kms.vault.url and the network; retry later"
            )
            return KmsError(message, code="kms-unavailable", hint=hint)
        if error.problem is VaultProblem.TLS:
            return KmsError(
                message,
                code="kms-unavailable",
                hint="set kms.vault.ca_bundle to the PEM of the CA that signed the server's certificate",
            )
        # VaultProblem.FAILED
        return KmsError(message, code="kms-error")

    def _post(self, what: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._connection.post(what, path, body)
        except VaultCallError as error:
            raise self._error(error) from error
        if not isinstance(response.get("data"), dict):
            raise KmsError(f"{what}: {self._where} returned no data", code="kms-error")
        for warning in response.get("warnings") or ():
            if "associated_data" in str(warning):
                raise KmsError(
                    f"{self._where} ignores associated_data on transit data keys",
                    code="kms-unsupported",
                    hint="upgrade to Vault >= 1.15 or OpenBao >= 2: an unbound data key is never stored",
                )
        data: dict[str, Any] = response["data"]
        return data

    def generate_data_key(self, context: EncryptionContext) -> tuple[SecretBytes, WrappedKey]:
        what = f"datakey for {context.table} {context.row_id}"
        data = self._post(
            what,
            f"/v1/{self._mount}/datakey/plaintext/{self._key}",
            {"associated_data": _b64(context.as_aad()), "bits": _DEK_BYTES * 8},
        )
        ciphertext = data.get("ciphertext")
        try:
            plaintext = base64.b64decode(str(data.get("plaintext")), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KmsError(f"{what}: {self._where} returned a malformed data key", code="kms-error") from exc
        if not isinstance(ciphertext, str) or not ciphertext.startswith("vault:") or len(plaintext) != _DEK_BYTES:
            raise KmsError(f"{what}: {self._where} returned a malformed data key", code="kms-error")
        return SecretBytes(plaintext), WrappedKey(key_id=self.key_id, ciphertext=ciphertext.encode("ascii"))

    def wrap_data_key(self, dek: SecretBytes, context: EncryptionContext) -> WrappedKey:
        """Transit ``encrypt`` of an existing data key, bound to the row as associated data (``kms rewrap``)."""
        what = f"encrypt for {context.table} {context.row_id}"
        if len(dek.reveal()) != _DEK_BYTES:
            raise KmsError(f"{what}: the data key is not 256 bits", code="kms-error")
        data = self._post(
            what,
            f"/v1/{self._mount}/encrypt/{self._key}",
            {"plaintext": _b64(dek.reveal()), "associated_data": _b64(context.as_aad())},
        )
        ciphertext = data.get("ciphertext")
        if not isinstance(ciphertext, str) or not ciphertext.startswith("vault:"):
            raise KmsError(f"{what}: {self._where} returned a malformed wrapped key", code="kms-error")
        return WrappedKey(key_id=self.key_id, ciphertext=ciphertext.encode("ascii"))

    def decrypt_data_key(self, wrapped: WrappedKey, context: EncryptionContext) -> SecretBytes:
        what = f"decrypt for {context.table} {context.row_id}"
        if wrapped.key_id != self.key_id:
            raise KmsError(
                f"this data key was wrapped by transit key {wrapped.key_id}, not by {self.key_id}",
                code="kms-wrong-master-key",
                hint="configure the transit key the state was created with, or run `certreconcile kms rewrap`",
            )
        try:
            ciphertext = wrapped.ciphertext.decode("ascii")
        except UnicodeDecodeError as exc:
            raise KmsError(f"{what}: the wrapped data key is damaged", code="kms-decrypt-failed") from exc
        data = self._post(
            what,
            f"/v1/{self._mount}/decrypt/{self._key}",
            {"ciphertext": ciphertext, "associated_data": _b64(context.as_aad())},
        )
        try:
            plaintext = base64.b64decode(str(data.get("plaintext")), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KmsError(f"{what}: {self._where} returned a malformed data key", code="kms-error") from exc
        if len(plaintext) != _DEK_BYTES:
            raise KmsError(f"{what}: {self._where} returned a malformed data key", code="kms-error")
        return SecretBytes(plaintext)
