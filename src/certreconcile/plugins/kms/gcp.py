"""Google Cloud KMS over its REST API v1: a local data key per private key, wrapped by a CryptoKey.

A fresh 256-bit data key is made here (``os.urandom``) and wrapped with
``POST {endpoint}/v1/{key_name}:encrypt``; the row's AAD goes in
``additionalAuthenticatedData``, so the wrapped key does not unwrap for another row, table,
key version or purpose. ``POST {endpoint}/v1/{key_name}:decrypt`` with the same AAD unwraps
it. Decrypt is always called on the CryptoKey (Cloud KMS picks the version from the
ciphertext), so the envelope records the CryptoKey name, never ``.../cryptoKeyVersions/N``.

Request and response shapes follow Google's reference pages
https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys/encrypt
and ``.../cryptoKeys/decrypt``: bytes fields are standard base64, the ``*Crc32c`` fields are
int64 values, hence decimal strings in JSON. As Google recommends, every request carries the
CRC32C of what it sends, and every response is checked (``verified*Crc32c`` true, the CRC32C
of returned bytes); a mismatch is ``kms-integrity-failed`` and nothing is stored.

httpx is imported here only, and only when a key is first wrapped or unwrapped: building the
adapter does no I/O and reads no credentials (``plan`` never gets that far). The OAuth access
token is ``GOOGLE_OAUTH_ACCESS_TOKEN`` from the settings' environment, else the GCE metadata
server's token for the default service account (host overridable by ``GCE_METADATA_HOST``),
cached until one minute before it expires.

Errors are :class:`~certreconcile.errors.KmsError` with a stable code; they name the endpoint
(``scheme://host:port``), the HTTP status and Google's status word, never Google's message
text, the token or key bytes.
"""

from __future__ import annotations

import base64
import binascii
import os
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from certreconcile.errors import KmsError
from certreconcile.plugins.kms._redact import display_url
from certreconcile.plugins.ports import EncryptionContext, SecretBytes, WrappedKey
from certreconcile.retry import RetryPolicy, Verdict

__all__ = ["DEFAULT_ENDPOINT", "GcpKms", "crc32c"]

DEFAULT_ENDPOINT = "https://cloudkms.googleapis.com"
DEFAULT_METADATA_HOST = "metadata.google.internal"
_TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"  # noqa: S105 - a URL path
_DEK_BYTES = 32
_TOKEN_MARGIN_SECONDS = 60.0  # a cached token is renewed this long before it expires
_DEFAULT_TOKEN_SECONDS = 300.0  # lifetime assumed when the metadata server states none


# ---------------------------------------------------------------- CRC32C (Castagnoli)


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        value = byte
        for _ in range(8):
            value = (value >> 1) ^ 0x82F63B78 if value & 1 else value >> 1
        table.append(value)
    return tuple(table)


_CRC32C_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (iSCSI polynomial, reflected), the checksum Cloud KMS uses; pure Python, small inputs only."""
    value = 0xFFFFFFFF
    for byte in data:
        value = _CRC32C_TABLE[(value ^ byte) & 0xFF] ^ (value >> 8)
    return value ^ 0xFFFFFFFF


# ---------------------------------------------------------------- helpers


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _crc_field(data: bytes) -> str:
    return str(crc32c(data))  # int64 -> a decimal string in proto3 JSON


def _caused_by_tls(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, ssl.SSLError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# Google status word -> (our code, hint) for statuses not decided by the HTTP status alone.
_STATUS_CODES: dict[str, tuple[str, str]] = {
    "FAILED_PRECONDITION": ("kms-key-disabled", "enable the CryptoKey's primary version (or the version used)"),
    "RESOURCE_EXHAUSTED": ("kms-throttled", "retry later, or raise the Cloud KMS request quota"),
    "UNAUTHENTICATED": ("kms-access-denied", "the access token is invalid or expired"),
    "PERMISSION_DENIED": (
        "kms-access-denied",
        "grant roles/cloudkms.cryptoKeyEncrypterDecrypter on the key to the caller",
    ),
    "NOT_FOUND": ("kms-key-not-found", "check kms.gcp.key_name (project, location, key ring, key)"),
}


@dataclass(frozen=True, slots=True)
class _Token:
    value: str  # never shown, logged or put in an error
    renew_at: float | None  # monotonic time after which it is fetched again; None: never (from the environment)


def _passing(exc: BaseException) -> Verdict:
    """A failure worth a retry: the KMS unavailable or throttling, not a TLS failure nor a refusal."""
    if not isinstance(exc, KmsError) or exc.code not in ("kms-unavailable", "kms-throttled"):
        return Verdict(False)
    if exc.__cause__ is not None and _caused_by_tls(exc.__cause__):
        return Verdict(False)
    return Verdict(True, None, exc.code)


class GcpKms:
    name = "gcp"

    def __init__(
        self,
        key_name: str,
        *,
        endpoint: str = DEFAULT_ENDPOINT,
        ca_bundle: Path | None = None,
        env: Mapping[str, str] | None = None,
        timeout: float = 15.0,
        metadata_timeout: float = 3.0,
        monotonic: Callable[[], float] = time.monotonic,
        transport: Any = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        """``transport``: an ``httpx.BaseTransport`` to use instead of the network (tests).

        ``retry``: encrypt and decrypt change nothing at the KMS, so a KMS that is unavailable or
        throttling (no answer, 5xx, 429) is asked again, bounded; never after a TLS failure or a refusal.
        """
        self._key_name = key_name.strip("/")
        self._endpoint = endpoint.rstrip("/")
        self._ca_bundle = ca_bundle
        self._env = dict(env or {})
        self._timeout = timeout
        self._metadata_timeout = metadata_timeout
        self._monotonic = monotonic
        self._transport = transport
        self.retry = retry or RetryPolicy()
        self._client: Any = None
        self._token: _Token | None = None
        self._lock = threading.Lock()

    @property
    def key_id(self) -> str:
        """The CryptoKey, as recorded in envelopes (the version used is inside the ciphertext)."""
        return self._key_name

    @property
    def _where(self) -> str:
        return display_url(self._endpoint)

    # ------------------------------------------------------------------ client and token

    def _http(self) -> Any:
        with self._lock:
            if self._client is None:
                try:
                    import httpx
                except ImportError as exc:
                    raise KmsError(
                        "the gcp KMS needs httpx, which is not installed",
                        code="kms-sdk-missing",
                        hint="pip install 'certreconcile[gcp]'",
                    ) from exc
                verify: ssl.SSLContext | bool = True
                if self._ca_bundle is not None:
                    try:
                        verify = ssl.create_default_context(cafile=str(self._ca_bundle))
                    except (OSError, ssl.SSLError) as exc:
                        raise KmsError(
                            "kms.gcp.ca_bundle cannot be read as PEM certificates",
                            code="kms-config-invalid",
                            hint="point ca_bundle at a PEM file of CA certificates",
                        ) from exc
                self._client = httpx.Client(
                    verify=verify, timeout=self._timeout, follow_redirects=False, transport=self._transport
                )
            return self._client

    def _access_token(self) -> str:
        with self._lock:
            token = self._token
        if token is not None and (token.renew_at is None or self._monotonic() < token.renew_at):
            return token.value
        from_env = self._env.get("GOOGLE_OAUTH_ACCESS_TOKEN")
        token = _Token(from_env, None) if from_env else self._metadata_token()
        with self._lock:
            self._token = token
        return token.value

    def _forget_token(self, used: str) -> bool:
        """Drop a cached metadata token the server refused; True when a new one can be fetched."""
        with self._lock:
            if self._token is not None and self._token.value == used and self._token.renew_at is not None:
                self._token = None
                return True
        return False

    def _metadata_token(self) -> _Token:
        client = self._http()
        import httpx

        host = self._env.get("GCE_METADATA_HOST") or DEFAULT_METADATA_HOST
        url = f"http://{host}{_TOKEN_PATH}"
        missing = "no Google credentials for the gcp KMS"
        hint = "set GOOGLE_OAUTH_ACCESS_TOKEN, or run on GCE/GKE with a service account"
        try:
            response = client.get(url, headers={"Metadata-Flavor": "Google"}, timeout=self._metadata_timeout)
        except httpx.HTTPError as exc:
            raise KmsError(
                f"{missing}: GOOGLE_OAUTH_ACCESS_TOKEN is unset and the metadata server "
                f"{display_url(url)} does not answer ({type(exc).__name__})",
                code="kms-credentials-missing",
                hint=hint,
            ) from exc
        if response.status_code != 200:
            raise KmsError(
                f"{missing}: the metadata server {display_url(url)} gave no token (HTTP {response.status_code})",
                code="kms-credentials-missing",
                hint=hint,
            )
        try:
            body = response.json()
            value = body["access_token"]
            lifetime = float(body.get("expires_in", _DEFAULT_TOKEN_SECONDS))
        except (ValueError, KeyError, TypeError) as exc:
            raise KmsError(
                f"{missing}: the metadata server {display_url(url)} answered no token",
                code="kms-credentials-missing",
                hint=hint,
            ) from exc
        if not isinstance(value, str) or not value:
            raise KmsError(
                f"{missing}: the metadata server {display_url(url)} answered no token",
                code="kms-credentials-missing",
                hint=hint,
            )
        renew_at = self._monotonic() + max(0.0, lifetime - _TOKEN_MARGIN_SECONDS)
        return _Token(value, renew_at)

    # ------------------------------------------------------------------ calls

    def _post(self, what: str, verb: str, body: dict[str, str], *, decrypting: bool) -> dict[str, Any]:
        """:meth:`_post_once`, retried (bounded) while the KMS is unavailable or throttling."""
        return self.retry.call(
            f"{what} at {self._where}", lambda: self._post_once(what, verb, body, decrypting=decrypting), _passing
        )

    def _post_once(self, what: str, verb: str, body: dict[str, str], *, decrypting: bool) -> dict[str, Any]:
        """POST ``{endpoint}/v1/{key_name}:{verb}``; every failure is a one-line KmsError naming no secret."""
        client = self._http()  # first: it reports a missing httpx as kms-sdk-missing
        import httpx

        url = f"{self._endpoint}/v1/{self._key_name}:{verb}"
        for attempt in (1, 2):
            token = self._access_token()
            try:
                response = client.post(url, json=body, headers={"Authorization": f"Bearer {token}"})
            except httpx.TimeoutException as exc:
                raise KmsError(
                    f"{what}: {self._where} did not answer in time ({type(exc).__name__})",
                    code="kms-unavailable",
                    hint="check the network and kms.gcp.endpoint; retry later",
                ) from exc
            except httpx.ConnectError as exc:
                tls = _caused_by_tls(exc)
                raise KmsError(
                    f"{what}: cannot reach {self._where} ({'TLS failed' if tls else type(exc).__name__})",
                    code="kms-unavailable",
                    hint="set kms.gcp.ca_bundle to the CA of the endpoint's certificate"
                    if tls
                    else "check the network and kms.gcp.endpoint; retry later",
                ) from exc
            except httpx.HTTPError as exc:
                raise KmsError(
                    f"{what}: the request to {self._where} failed ({type(exc).__name__})",
                    code="kms-unavailable",
                    hint="check the network and kms.gcp.endpoint; retry later",
                ) from exc
            if response.status_code == 401 and attempt == 1 and self._forget_token(token):
                continue  # a metadata token revoked or expired early: fetch a new one, once
            return self._result(what, response, decrypting=decrypting)
        raise AssertionError("unreachable")  # pragma: no cover

    def _result(self, what: str, response: Any, *, decrypting: bool) -> dict[str, Any]:
        status: int = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        if 200 <= status < 300:
            if not isinstance(body, dict):
                raise KmsError(f"{what}: {self._where} answered no JSON object", code="kms-error")
            return body
        error = body.get("error") if isinstance(body, dict) else None
        word = str(error.get("status", "")) if isinstance(error, dict) else ""
        label = f"HTTP {status}" + (f" {word}" if word else "")
        if decrypting and status == 400 and word in ("", "INVALID_ARGUMENT"):
            # Cloud KMS's answer to another row's AAD, a damaged or a foreign ciphertext.
            code, hint = "kms-decrypt-failed", "the stored key_ref belongs to another row or was altered"
        elif word in _STATUS_CODES:
            code, hint = _STATUS_CODES[word]
        elif status in (401, 403):
            code, hint = _STATUS_CODES["PERMISSION_DENIED"]
        elif status == 404:
            code, hint = _STATUS_CODES["NOT_FOUND"]
        elif status == 429:
            code, hint = _STATUS_CODES["RESOURCE_EXHAUSTED"]
        elif status >= 500:
            code, hint = "kms-unavailable", "retry later"
        else:
            code, hint = "kms-error", "see the Cloud KMS status word"
        raise KmsError(f"{what} refused by {self._where} ({label})", code=code, hint=hint)

    def _bytes_field(self, what: str, body: dict[str, Any], field: str) -> bytes:
        try:
            return base64.b64decode(str(body.get(field, "")), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise KmsError(f"{what}: {self._where} returned a malformed {field}", code="kms-error") from exc

    def _check_crc(self, what: str, body: dict[str, Any], field: str, data: bytes) -> None:
        """Google's integrity field ``field`` must be present and match ``data``."""
        stated = body.get(field)
        if stated is None or str(stated) != str(crc32c(data)):
            raise KmsError(
                f"{what}: the {field} from {self._where} does not match the data",
                code="kms-integrity-failed",
                hint="the response was damaged in transit; retry",
            )

    def _check_verified(self, what: str, body: dict[str, Any], *fields: str) -> None:
        for field in fields:
            if body.get(field) is not True:
                raise KmsError(
                    f"{what}: {self._where} did not verify the request checksums ({field})",
                    code="kms-integrity-failed",
                    hint="the request was damaged in transit, or the endpoint is not Cloud KMS; retry",
                )

    # ------------------------------------------------------------------ the Kms protocol

    def wrap_data_key(self, dek: SecretBytes, context: EncryptionContext) -> WrappedKey:
        """Cloud KMS ``encrypt`` of the given data key, bound to the row's AAD."""
        what = f"encrypt for {context.table} {context.row_id}"
        plaintext = dek.reveal()
        if len(plaintext) != _DEK_BYTES:  # never wrap what decrypt_data_key would refuse to return
            raise KmsError(f"{what}: a data key must be {_DEK_BYTES * 8} bits", code="kms-error")
        aad = context.as_aad()
        body = self._post(
            what,
            "encrypt",
            {
                "plaintext": _b64(plaintext),
                "additionalAuthenticatedData": _b64(aad),
                "plaintextCrc32c": _crc_field(plaintext),
                "additionalAuthenticatedDataCrc32c": _crc_field(aad),
            },
            decrypting=False,
        )
        used = str(body.get("name", ""))
        if used != self._key_name and not used.startswith(self._key_name + "/cryptoKeyVersions/"):
            raise KmsError(
                f"{what}: {self._where} encrypted with another key than kms.gcp.key_name",
                code="kms-error",
                hint="check kms.gcp.key_name and kms.gcp.endpoint",
            )
        self._check_verified(what, body, "verifiedPlaintextCrc32c", "verifiedAdditionalAuthenticatedDataCrc32c")
        ciphertext = self._bytes_field(what, body, "ciphertext")
        if not ciphertext:
            raise KmsError(f"{what}: {self._where} returned no ciphertext", code="kms-error")
        self._check_crc(what, body, "ciphertextCrc32c", ciphertext)
        return WrappedKey(key_id=self._key_name, ciphertext=ciphertext)

    def generate_data_key(self, context: EncryptionContext) -> tuple[SecretBytes, WrappedKey]:
        dek = SecretBytes(os.urandom(_DEK_BYTES))
        return dek, self.wrap_data_key(dek, context)

    def decrypt_data_key(self, wrapped: WrappedKey, context: EncryptionContext) -> SecretBytes:
        what = f"decrypt for {context.table} {context.row_id}"
        if wrapped.key_id != self._key_name:
            raise KmsError(
                f"this data key was wrapped by CryptoKey {wrapped.key_id}, not by {self._key_name}",
                code="kms-wrong-master-key",
                hint="configure the key the state was created with, or run `certreconcile kms rewrap`",
            )
        aad = context.as_aad()
        body = self._post(
            what,
            "decrypt",
            {
                "ciphertext": _b64(wrapped.ciphertext),
                "additionalAuthenticatedData": _b64(aad),
                "ciphertextCrc32c": _crc_field(wrapped.ciphertext),
                "additionalAuthenticatedDataCrc32c": _crc_field(aad),
            },
            decrypting=True,
        )
        plaintext = self._bytes_field(what, body, "plaintext")
        self._check_crc(what, body, "plaintextCrc32c", plaintext)
        if len(plaintext) != _DEK_BYTES:
            raise KmsError(f"{what}: {self._where} returned a malformed data key", code="kms-error")
        return SecretBytes(plaintext)
