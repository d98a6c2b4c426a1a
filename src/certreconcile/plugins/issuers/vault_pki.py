"""The ``vault_pki`` issuer: a Vault / OpenBao PKI role signs the CSR.

``POST /v1/<mount>/sign/<role>`` with the CSR, ``common_name`` (the first domain),
``alt_names`` (the others) and, when declared, ``ttl``. The role decides what may be
signed (allowed domains, key types, maximum TTL); a role with ``use_csr_common_name`` /
``use_csr_sans`` (the default) takes the names from the CSR, which holds exactly the
declared domains. The answer's ``certificate`` is the leaf; ``ca_chain`` (else
``issuing_ca``) is the chain, without the leaf.

Login (token, AppRole, Kubernetes), TLS and the re-login of an expired token are the
:class:`~certreconcile.plugins.vault_auth.VaultConnection`'s, shared with the vault KMS.
Building the issuer does no I/O and reads no credentials.

Errors are :class:`~certreconcile.errors.IssuerError` with a stable ``vault-pki-*`` code, one
line naming the server, the HTTP status and Vault's own reason; never the token.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any, assert_never

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from certreconcile.crypto.keys import common_name_for
from certreconcile.domain.keys import KeyType
from certreconcile.errors import IssuerError
from certreconcile.plugins.ports import IssuedCertificate, IssueRequest
from certreconcile.plugins.vault_auth import VaultCallError, VaultConnection, VaultLogin, VaultProblem, login_hint

__all__ = ["VaultPkiIssuer", "vault_serial_number"]


def vault_serial_number(cert: x509.Certificate) -> str:
    """The serial as Vault writes it: lower-case hex bytes joined by colons (``7a:69:...``)."""
    serial = cert.serial_number
    return serial.to_bytes(max(1, (serial.bit_length() + 7) // 8), "big").hex(":")


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode("ascii")


class VaultPkiIssuer:
    def __init__(
        self,
        name: str,
        *,
        url: str,
        role: str,
        login: VaultLogin,
        mount: str = "pki",
        ttl: timedelta | None = None,
        namespace: str | None = None,
        ca_bundle: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.name = name
        self._mount = mount.strip("/")
        self._role = role
        self._ttl = ttl
        self._connection = VaultConnection(
            url=url,
            login=login,
            label=f"the vault_pki issuer {name!r}",
            namespace=namespace,
            ca_bundle=ca_bundle,
            env=env,
            timeout=timeout,
        )

    def supported_key_types(self) -> frozenset[KeyType]:
        """Every type: the role's ``key_type`` (``any``, or one type) has the last word when signing."""
        return frozenset(KeyType)

    @property
    def _where(self) -> str:
        return self._connection.where

    # ------------------------------------------------------------------ issue

    def issue(self, request: IssueRequest) -> IssuedCertificate:
        # A CN holds at most 64 characters: the first name that fits, else none (the role then
        # needs require_cn=false); every other name goes in alt_names.
        common_name = common_name_for(request.domains)
        body: dict[str, Any] = {"csr": request.csr_pem, "format": "pem"}
        if common_name is not None:
            body["common_name"] = common_name
        alt_names = [name for name in request.domains if name != common_name]
        if alt_names:
            body["alt_names"] = ",".join(alt_names)
        if self._ttl is not None:
            body["ttl"] = f"{int(self._ttl.total_seconds())}s"
        what = f"signing {request.name} with role {self._role}"
        data = self._data(what, f"/v1/{self._mount}/sign/{self._role}", body)
        leaf = self._certificates(what, data.get("certificate"))
        if len(leaf) != 1:
            raise IssuerError(f"{what}: {self._where} returned no certificate", code="vault-pki-bad-response")
        chain_field = data.get("ca_chain") or data.get("issuing_ca")
        chain = [cert for cert in self._certificates(what, chain_field) if cert != leaf[0]]
        return IssuedCertificate(cert_pem=_pem(leaf[0]), chain_pem="".join(_pem(cert) for cert in chain))

    def _certificates(self, what: str, value: object) -> list[x509.Certificate]:
        """PEM certificates from one string or a list of strings, parsed (Vault's PEM has no final newline)."""
        texts = [value] if isinstance(value, str) else value if isinstance(value, list) else []
        certs: list[x509.Certificate] = []
        for text in texts:
            if not isinstance(text, str):
                raise IssuerError(f"{what}: {self._where} returned a malformed chain", code="vault-pki-bad-response")
            try:
                certs.extend(x509.load_pem_x509_certificates(text.encode("ascii")))
            except (ValueError, UnicodeEncodeError) as exc:
                raise IssuerError(
                    f"{what}: {self._where} returned a malformed certificate", code="vault-pki-bad-response"
                ) from exc
        return certs

    # ------------------------------------------------------------------ revoke

    def revoke(self, cert_pem: str, reason: str) -> None:
        """``POST <mount>/revoke`` with the serial number; revoking twice is not an error.

        Vault and OpenBao take no revocation reason code (their CRL entries carry none):
        ``reason`` is not sent; the executor records it in the audit trail.
        """
        try:
            cert = x509.load_pem_x509_certificate(cert_pem.encode("ascii"))
        except (ValueError, UnicodeEncodeError) as exc:
            raise IssuerError("the certificate to revoke is malformed", code="vault-pki-bad-certificate") from exc
        serial = vault_serial_number(cert)
        self._data(f"revoking serial {serial}", f"/v1/{self._mount}/revoke", {"serial_number": serial})

    # ------------------------------------------------------------------ calls and errors

    def _data(self, what: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
        try:
            response = self._connection.post(what, path, body)
        except VaultCallError as error:
            raise self._error(error) from error
        data = response.get("data")
        if not isinstance(data, dict):
            raise IssuerError(f"{what}: {self._where} returned no data", code="vault-pki-bad-response")
        return data

    def _error(self, error: VaultCallError) -> IssuerError:
        """The IssuerError (stable code, hint) for a failed call."""
        message = error.message
        sign, revoke = f"{self._mount}/sign/{self._role}", f"{self._mount}/revoke"
        login = login_hint(error, self._connection.method)  # the hint shared by every Vault plug-in
        match error.problem:
            case VaultProblem.SDK_MISSING:
                return IssuerError(message, code="vault-pki-sdk-missing", hint=login)
            case VaultProblem.CREDENTIALS_MISSING:
                return IssuerError(message, code="vault-pki-credentials-missing", hint=login)
            case VaultProblem.LOGIN_REFUSED:
                return IssuerError(message, code="vault-pki-access-denied", hint=login)
            case VaultProblem.ACCESS_DENIED:
                return IssuerError(
                    message,
                    code="vault-pki-access-denied",
                    hint=f"the token needs update on {sign} (and on {revoke} to revoke)",
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

    def _refused(self, error: VaultCallError) -> IssuerError:
        """Vault refused the request (400): what it refused, from its error text."""
        message = error.message
        reason = "; ".join(error.server_errors)
        sign = f"{self._mount}/sign/{self._role}"
        text = reason.lower()
        detailed = f"{message}: {reason}" if reason else message
        if "not allowed" in text:
            return IssuerError(
                detailed,
                code="vault-pki-name-not-allowed",
                hint=f"allow these names in the role {self._role} (allowed_domains, allow_subdomains, "
                "allow_wildcard_certificates), or declare another issuer",
            )
        if "unknown role" in text or "role not found" in text:
            return IssuerError(detailed, code="vault-pki-role-not-found", hint=f"create the role {sign}")
        if "not found" in text and "serial" in text:
            return IssuerError(
                detailed,
                code="vault-pki-certificate-unknown",
                hint=f"the certificate was not issued by the PKI mount {self._mount}/",
            )
        return IssuerError(detailed, code="vault-pki-refused", hint="see the Vault server log")

    def _server_error(self, error: VaultCallError) -> IssuerError:
        """A mount missing, throttling, the server or the TLS handshake failing."""
        message = error.message
        if error.problem is VaultProblem.NOT_FOUND:
            return IssuerError(
                message, code="vault-pki-mount-not-found", hint=f"enable the pki secrets engine at {self._mount}/"
            )
        if error.problem is VaultProblem.THROTTLED:
            return IssuerError(message, code="vault-pki-throttled", hint="retry later")
        if error.problem is VaultProblem.UNAVAILABLE:
            return IssuerError(message, code="vault-pki-unavailable", hint="check the url and the network")
        if error.problem is VaultProblem.TLS:
            return IssuerError(
                message,
                code="vault-pki-tls",
                hint="set ca_bundle to the PEM of the CA that signed the server's certificate",
            )
        # VaultProblem.FAILED
        return IssuerError(message, code="vault-pki-error", hint="see the Vault server log")
