"""A Cloud KMS REST v1 test server (encrypt and decrypt) and a GCE metadata token endpoint.

Loaded as a plugin by ``tests/conftest.py``. Fixture ``gcp_kms`` (session): one
:class:`GcpKmsServer` on 127.0.0.1 (a free port), stopped at the end of the session.

What it implements, as documented by Google (checked against the reference pages
https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys/encrypt
and https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys/decrypt):

* ``POST /v1/{name=projects/*/locations/*/keyRings/*/cryptoKeys/**}:encrypt`` (a CryptoKey,
  then its primary version, or a CryptoKeyVersion) with the body fields ``plaintext``,
  ``additionalAuthenticatedData`` (standard base64), ``plaintextCrc32c``,
  ``additionalAuthenticatedDataCrc32c`` (int64 as JSON strings) -> ``name`` (the
  CryptoKeyVersion used), ``ciphertext``, ``ciphertextCrc32c``, ``verifiedPlaintextCrc32c``,
  ``verifiedAdditionalAuthenticatedDataCrc32c``, ``protectionLevel``;
* ``POST /v1/{name=projects/*/locations/*/keyRings/*/cryptoKeys/*}:decrypt`` (a CryptoKey only)
  with ``ciphertext``, ``additionalAuthenticatedData``, ``ciphertextCrc32c``,
  ``additionalAuthenticatedDataCrc32c`` -> ``plaintext``, ``plaintextCrc32c``, ``usedPrimary``,
  ``protectionLevel``;
* an unknown JSON field, bad base64 or a checksum mismatch is 400 INVALID_ARGUMENT; a missing or
  unknown Bearer token 401 UNAUTHENTICATED; a token without permission 403 PERMISSION_DENIED; an
  unknown key 404 NOT_FOUND; a disabled key 400 FAILED_PRECONDITION; another AAD or a damaged
  ciphertext 400 INVALID_ARGUMENT; errors as ``{"error": {"code", "message", "status"}}``.

Ciphertexts are AES-256-GCM under a per-version key (random, in memory), with the AAD:
``version (4 bytes) | nonce (12) | ciphertext+tag``. ``fail_next`` makes the next requests
answer a given HTTP status (503 UNAVAILABLE...). Every request is recorded (:attr:`requests`).

The metadata endpoint ``GET /computeMetadata/v1/instance/service-accounts/default/token``
needs ``Metadata-Flavor: Google`` and hands out a new token each time, valid for
``metadata_expires_in`` seconds (the server does not enforce that lifetime: tests revoke).
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import http.server
import json
import os
import re
import secrets
import ssl
import struct
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["GcpKmsServer", "RecordedRequest", "crc32c_bitwise", "gcp_kms"]

METADATA_TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
_KEY = r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/:]+"
_ROUTE = re.compile(rf"^/v1/(?P<key>{_KEY})(?:/cryptoKeyVersions/(?P<version>[0-9]+))?:(?P<verb>encrypt|decrypt)$")
_ENCRYPT_FIELDS = {"plaintext", "additionalAuthenticatedData", "plaintextCrc32c", "additionalAuthenticatedDataCrc32c"}
_DECRYPT_FIELDS = {"ciphertext", "additionalAuthenticatedData", "ciphertextCrc32c", "additionalAuthenticatedDataCrc32c"}
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND",
           429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE"}


def crc32c_bitwise(data: bytes) -> int:
    """CRC-32C bit by bit: deliberately not the adapter's table-driven code, so each checks the other."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 & -(crc & 1))
    return crc ^ 0xFFFFFFFF


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class _ApiError(Exception):
    def __init__(self, code: int, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or _STATUS.get(code, "UNKNOWN")


@dataclasses.dataclass
class _CryptoKey:
    versions: dict[int, bytes]  # version -> AES-256 key
    primary: int
    enabled: bool = True


class GcpKmsServer:
    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        """``tls``: serve HTTPS with this server context (the default fixture serves plain HTTP)."""
        self.token = "ya29.test-" + secrets.token_urlsafe(24)  # the token the tests put in the environment
        self.metadata_expires_in = 3599
        self.requests: list[RecordedRequest] = []
        self.fail_next: list[int] = []  # HTTP statuses for the next KMS requests, consumed in order
        self._valid_tokens = {self.token}
        self._denied_tokens: set[str] = set()
        self._keys: dict[str, _CryptoKey] = {}
        self._issued = 0
        self._lock = threading.Lock()
        self._httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._scheme = "http"
        if tls is not None:
            self._httpd.socket = tls.wrap_socket(self._httpd.socket, server_side=True)
            self._scheme = "https"
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="gcp-kms-server", daemon=True)

    # ---------------------------------------------------------------- control

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"{self._scheme}://{host!s}:{port}"

    @property
    def metadata_host(self) -> str:
        """The value of ``GCE_METADATA_HOST`` (host:port, no scheme)."""
        host, port = self._httpd.server_address[:2]
        return f"{host!s}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=10)

    def create_key(self, name: str | None = None) -> str:
        """A new CryptoKey (one enabled version); its full resource name."""
        key_id = name or "k-" + secrets.token_hex(6)
        key_name = f"projects/certreconcile-test/locations/europe-west1/keyRings/ring/cryptoKeys/{key_id}"
        with self._lock:
            self._keys[key_name] = _CryptoKey(versions={1: AESGCM.generate_key(256)}, primary=1)
        return key_name

    def rotate(self, key_name: str) -> int:
        """A new primary version; older versions still decrypt."""
        with self._lock:
            key = self._keys[key_name]
            version = max(key.versions) + 1
            key.versions[version] = AESGCM.generate_key(256)
            key.primary = version
        return version

    def set_enabled(self, key_name: str, enabled: bool) -> None:
        with self._lock:
            self._keys[key_name].enabled = enabled

    def deny(self, token: str) -> None:
        """``token`` authenticates but has no permission on any key (403)."""
        with self._lock:
            self._valid_tokens.add(token)
            self._denied_tokens.add(token)

    def revoke(self, token: str) -> None:
        with self._lock:
            self._valid_tokens.discard(token)

    def requests_for(self, key_name: str) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith(f"/v1/{key_name}:")]

    def metadata_requests(self) -> list[RecordedRequest]:
        with self._lock:
            return [r for r in self.requests if r.path.startswith("/computeMetadata/")]

    def issued_tokens(self) -> int:
        with self._lock:
            return self._issued

    # ---------------------------------------------------------------- the API

    def _metadata_token(self, request: RecordedRequest) -> tuple[int, dict[str, Any]]:
        if request.method != "GET" or request.path != METADATA_TOKEN_PATH:
            raise _ApiError(404, "not found")
        if request.headers.get("metadata-flavor") != "Google":
            raise _ApiError(403, "Missing required header: Metadata-Flavor")
        with self._lock:
            self._issued += 1
            token = f"ya29.gce-{self._issued}-" + secrets.token_urlsafe(16)
            self._valid_tokens.add(token)
            expires_in = self.metadata_expires_in
        return 200, {"access_token": token, "expires_in": expires_in, "token_type": "Bearer"}

    def _authorize(self, request: RecordedRequest) -> None:
        header = request.headers.get("authorization", "")
        token = header.removeprefix("Bearer ") if header.startswith("Bearer ") else ""
        with self._lock:
            valid, denied = token in self._valid_tokens, token in self._denied_tokens
        if not valid:
            raise _ApiError(401, "Request had invalid authentication credentials.")
        if denied:
            raise _ApiError(403, "Permission 'cloudkms.cryptoKeyVersions.useToEncrypt' denied on resource.")

    @staticmethod
    def _body(request: RecordedRequest, allowed: set[str]) -> dict[str, Any]:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            raise _ApiError(400, "Invalid JSON payload: the content type is not application/json")
        try:
            body = json.loads(request.body)
        except ValueError as exc:
            raise _ApiError(400, "Invalid JSON payload received.") from exc
        if not isinstance(body, dict):
            raise _ApiError(400, "Invalid JSON payload received. Expected an object.")
        for name in body:
            if name not in allowed:
                raise _ApiError(400, f'Invalid JSON payload received. Unknown name "{name}": Cannot find field.')
        return body

    @staticmethod
    def _bytes(body: dict[str, Any], field: str, *, required: bool) -> bytes:
        value = body.get(field)
        if value is None:
            if required:
                raise _ApiError(400, f"{field} is required")
            return b""
        try:
            return base64.b64decode(str(value), validate=True)  # strict: standard alphabet, padded
        except (binascii.Error, ValueError) as exc:
            raise _ApiError(400, f'Invalid value at "{field}" (TYPE_BYTES), Base64 decoding failed') from exc

    @staticmethod
    def _check_crc(body: dict[str, Any], field: str, data: bytes) -> bool:
        if field not in body:
            return False
        value = body[field]
        if not isinstance(value, str) or not value.isdigit():
            raise _ApiError(400, f'Invalid value at "{field}" (TYPE_INT64)')
        if int(value) != crc32c_bitwise(data):
            raise _ApiError(400, f"The checksum in field {field} did not match the data.")
        return True

    def _key(self, key_name: str) -> _CryptoKey:
        key = self._keys.get(key_name)
        if key is None:
            raise _ApiError(404, f"{key_name} not found.")
        if not key.enabled:
            raise _ApiError(400, f"{key_name} is not enabled.", "FAILED_PRECONDITION")
        return key

    def _kms(self, request: RecordedRequest) -> tuple[int, dict[str, Any]]:
        route = _ROUTE.match(request.path)
        if request.method != "POST" or route is None:
            raise _ApiError(404, "The requested URL was not found on this server.")
        with self._lock:
            failure = self.fail_next.pop(0) if self.fail_next else None
        if failure is not None:
            raise _ApiError(failure, "The service is currently unavailable.")
        self._authorize(request)
        key_name, version, verb = route["key"], route["version"], route["verb"]
        if verb == "encrypt":
            body = self._body(request, _ENCRYPT_FIELDS)
            plaintext = self._bytes(body, "plaintext", required=True)
            aad = self._bytes(body, "additionalAuthenticatedData", required=False)
            verified_plaintext = self._check_crc(body, "plaintextCrc32c", plaintext)
            verified_aad = self._check_crc(body, "additionalAuthenticatedDataCrc32c", aad)
            with self._lock:
                key = self._key(key_name)
                used = int(version) if version else key.primary
                if used not in key.versions:
                    raise _ApiError(404, f"{key_name}/cryptoKeyVersions/{used} not found.")
                secret = key.versions[used]
            nonce = os.urandom(12)
            ciphertext = struct.pack(">I", used) + nonce + AESGCM(secret).encrypt(nonce, plaintext, aad)
            return 200, {
                "name": f"{key_name}/cryptoKeyVersions/{used}",
                "ciphertext": base64.b64encode(ciphertext).decode(),
                "ciphertextCrc32c": str(crc32c_bitwise(ciphertext)),
                "verifiedPlaintextCrc32c": verified_plaintext,
                "verifiedAdditionalAuthenticatedDataCrc32c": verified_aad,
                "protectionLevel": "SOFTWARE",
            }
        if version:  # decrypt is defined on the CryptoKey only
            raise _ApiError(404, "The requested URL was not found on this server.")
        body = self._body(request, _DECRYPT_FIELDS)
        ciphertext = self._bytes(body, "ciphertext", required=True)
        aad = self._bytes(body, "additionalAuthenticatedData", required=False)
        self._check_crc(body, "ciphertextCrc32c", ciphertext)
        self._check_crc(body, "additionalAuthenticatedDataCrc32c", aad)
        with self._lock:
            key = self._key(key_name)
            used = struct.unpack(">I", ciphertext[:4])[0] if len(ciphertext) >= 4 else 0
            secret = key.versions.get(used)
            primary = key.primary
        invalid = _ApiError(400, "Decryption failed: the ciphertext is invalid.")
        if secret is None or len(ciphertext) < 4 + 12 + 16:
            raise invalid
        try:
            plaintext = AESGCM(secret).decrypt(ciphertext[4:16], ciphertext[16:], aad)
        except InvalidTag as exc:
            raise invalid from exc
        return 200, {
            "plaintext": base64.b64encode(plaintext).decode(),
            "plaintextCrc32c": str(crc32c_bitwise(plaintext)),
            "usedPrimary": used == primary,
            "protectionLevel": "SOFTWARE",
        }

    def _handle(self, request: RecordedRequest) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.requests.append(request)
        try:
            if request.path.startswith("/computeMetadata/"):
                return self._metadata_token(request)
            return self._kms(request)
        except _ApiError as error:
            return error.code, {"error": {"code": error.code, "message": error.message, "status": error.status}}

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = RecordedRequest(
                    method=self.command,
                    path=self.path,
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                status, payload = server._handle(request)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # quiet: the requests are recorded instead

        return Handler


@pytest.fixture(scope="session")
def gcp_kms() -> Iterator[GcpKmsServer]:
    server = GcpKmsServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
