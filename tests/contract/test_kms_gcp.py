"""The gcp KMS beyond the shared contract: request shapes, tokens, integrity fields, error codes.

Against the Cloud KMS test server of ``tests/gcp_kms_server.py``. The request shapes are
those of Google's reference pages (checked there):
https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys/encrypt
https://cloud.google.com/kms/docs/reference/rest/v1/projects.locations.keyRings.cryptoKeys/decrypt
(bytes fields standard base64; ``*Crc32c`` fields int64, i.e. decimal strings in JSON).
"""

from __future__ import annotations

import base64
import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from certreconcile.desired.model import KmsSpec
from certreconcile.errors import KmsError
from certreconcile.plugins.kms.gcp import GcpKms, crc32c
from certreconcile.plugins.kms.gcp_config import GcpKmsConfig
from certreconcile.plugins.ports import EncryptionContext, SecretBytes, WrappedKey
from certreconcile.plugins.registry import PluginContext, create_kms
from certreconcile.retry import RetryPolicy
from certreconcile.testing.kms_contract import check_round_trip
from gcp_kms_server import METADATA_TOKEN_PATH, GcpKmsServer, crc32c_bitwise

CONTEXT = EncryptionContext(table="certificate", row_id="row-1")
ENCRYPT_FIELDS = {"plaintext", "additionalAuthenticatedData", "plaintextCrc32c", "additionalAuthenticatedDataCrc32c"}
DECRYPT_FIELDS = {"ciphertext", "additionalAuthenticatedData", "ciphertextCrc32c", "additionalAuthenticatedDataCrc32c"}


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _env_kms(server: GcpKmsServer, key_name: str, token: str | None = None) -> GcpKms:
    return GcpKms(key_name, endpoint=server.url, env={"GOOGLE_OAUTH_ACCESS_TOKEN": token or server.token})


def _metadata_kms(server: GcpKmsServer, key_name: str, clock: FakeClock | None = None) -> GcpKms:
    env = {"GCE_METADATA_HOST": server.metadata_host}
    if clock is None:
        return GcpKms(key_name, endpoint=server.url, env=env)
    return GcpKms(key_name, endpoint=server.url, env=env, monotonic=clock)


def _strict_b64(value: object) -> bytes:
    assert isinstance(value, str)
    return base64.b64decode(value, validate=True)  # standard alphabet with padding, nothing else


def _error(call: Any) -> KmsError:
    with pytest.raises(KmsError) as caught:
        call()
    return caught.value


# ---------------------------------------------------------------- CRC32C


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", 0),
        (b"123456789", 0xE3069283),  # the CRC-32C check value
        (bytes(32), 0x8A9136AA),  # RFC 3720 B.4 test vectors
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ],
    ids=["empty", "check-value", "zeros", "ones", "incrementing", "decrementing"],
)
def test_crc32c_known_values(data: bytes, expected: int) -> None:
    assert crc32c(data) == expected
    assert crc32c_bitwise(data) == expected


def test_crc32c_implementations_agree() -> None:
    for size in (1, 7, 32, 61, 200):
        data = os.urandom(size)
        assert crc32c(data) == crc32c_bitwise(data)


# ---------------------------------------------------------------- request shapes


def test_request_shapes_match_googles_api(gcp_kms: GcpKmsServer) -> None:
    key_name = gcp_kms.create_key()
    kms = _env_kms(gcp_kms, key_name)
    dek, wrapped = kms.generate_data_key(CONTEXT)
    assert kms.decrypt_data_key(wrapped, CONTEXT) == dek
    assert wrapped.key_id == key_name  # the CryptoKey, not .../cryptoKeyVersions/1

    encrypt, decrypt = gcp_kms.requests_for(key_name)
    aad = CONTEXT.as_aad()
    for request, verb in ((encrypt, "encrypt"), (decrypt, "decrypt")):
        assert request.method == "POST"
        assert request.path == f"/v1/{key_name}:{verb}"
        assert request.path.startswith("/v1/projects/") and "/cryptoKeys/" in request.path
        assert request.headers["authorization"] == f"Bearer {gcp_kms.token}"
        assert request.headers["content-type"] == "application/json"

    body = encrypt.json()
    assert set(body) == ENCRYPT_FIELDS
    assert _strict_b64(body["plaintext"]) == dek.reveal()
    assert _strict_b64(body["additionalAuthenticatedData"]) == aad
    assert body["plaintextCrc32c"] == str(crc32c_bitwise(dek.reveal()))
    assert body["additionalAuthenticatedDataCrc32c"] == str(crc32c_bitwise(aad))

    body = decrypt.json()
    assert set(body) == DECRYPT_FIELDS
    assert _strict_b64(body["ciphertext"]) == wrapped.ciphertext
    assert _strict_b64(body["additionalAuthenticatedData"]) == aad
    assert body["ciphertextCrc32c"] == str(crc32c_bitwise(wrapped.ciphertext))
    assert body["additionalAuthenticatedDataCrc32c"] == str(crc32c_bitwise(aad))


def test_server_is_strict_about_field_names_and_base64(gcp_kms: GcpKmsServer) -> None:
    """The shapes test means something only if the server refuses what Google refuses."""
    key_name = gcp_kms.create_key()
    url = f"{gcp_kms.url}/v1/{key_name}:encrypt"
    headers = {"Authorization": f"Bearer {gcp_kms.token}"}
    refused = [
        {"plaintext": "AAAA", "additional_authenticated_data": "AAAA"},  # the proto name, not the JSON name
        {"plaintext": "-_-_"},  # URL-safe alphabet
        {"plaintext": "AAA"},  # no padding
        {"plaintext": "AAAA", "plaintextCrc32c": "1"},  # a wrong checksum
    ]
    for body in refused:
        response = httpx.post(url, json=body, headers=headers)
        assert response.status_code == 400, body
        assert response.json()["error"]["status"] == "INVALID_ARGUMENT"
    assert httpx.post(url, json={"plaintext": "AAAA"}).status_code == 401
    response = httpx.post(f"{gcp_kms.url}/v1/{key_name}/cryptoKeyVersions/1:decrypt", json={}, headers=headers)
    assert response.status_code == 404  # decrypt exists on the CryptoKey only


def test_wrap_data_key_wraps_the_given_key(gcp_kms: GcpKmsServer) -> None:
    kms = _env_kms(gcp_kms, gcp_kms.create_key())
    dek = SecretBytes(os.urandom(32))
    wrapped = kms.wrap_data_key(dek, CONTEXT)
    assert dek.reveal() not in wrapped.ciphertext
    assert kms.decrypt_data_key(wrapped, CONTEXT) == dek


def test_rotated_key_still_decrypts_older_data_keys(gcp_kms: GcpKmsServer) -> None:
    key_name = gcp_kms.create_key()
    kms = _env_kms(gcp_kms, key_name)
    old_dek, old = kms.generate_data_key(CONTEXT)
    assert gcp_kms.rotate(key_name) == 2
    new_dek, new = kms.generate_data_key(CONTEXT)
    assert old.key_id == new.key_id == key_name
    assert kms.decrypt_data_key(old, CONTEXT) == old_dek
    assert kms.decrypt_data_key(new, CONTEXT) == new_dek
    assert all(r.path == f"/v1/{key_name}:decrypt" for r in gcp_kms.requests_for(key_name) if "decrypt" in r.path)


# ---------------------------------------------------------------- access tokens


def test_token_from_the_environment_wins(gcp_kms: GcpKmsServer) -> None:
    key_name = gcp_kms.create_key()
    before = len(gcp_kms.metadata_requests())
    kms = GcpKms(
        key_name,
        endpoint=gcp_kms.url,
        env={"GOOGLE_OAUTH_ACCESS_TOKEN": gcp_kms.token, "GCE_METADATA_HOST": gcp_kms.metadata_host},
    )
    check_round_trip(lambda: kms)
    assert len(gcp_kms.metadata_requests()) == before


def test_token_from_the_metadata_server(gcp_kms: GcpKmsServer) -> None:
    key_name = gcp_kms.create_key()
    before = len(gcp_kms.metadata_requests())
    kms = _metadata_kms(gcp_kms, key_name)
    check_round_trip(lambda: kms)
    fetched = gcp_kms.metadata_requests()[before:]
    assert len(fetched) == 1  # cached for the later calls
    assert fetched[0].method == "GET"
    assert fetched[0].path == METADATA_TOKEN_PATH
    assert fetched[0].headers["metadata-flavor"] == "Google"
    tokens = {r.headers["authorization"] for r in gcp_kms.requests_for(key_name)}
    assert len(tokens) == 1
    assert tokens != {f"Bearer {gcp_kms.token}"}


def test_metadata_token_is_renewed_before_it_expires(gcp_kms: GcpKmsServer) -> None:
    key_name = gcp_kms.create_key()
    clock = FakeClock()
    kms = _metadata_kms(gcp_kms, key_name, clock)
    before = len(gcp_kms.metadata_requests())
    dek, wrapped = kms.generate_data_key(CONTEXT)
    clock.now += gcp_kms.metadata_expires_in - 120  # still valid for two minutes: kept
    kms.decrypt_data_key(wrapped, CONTEXT)
    assert len(gcp_kms.metadata_requests()) == before + 1
    clock.now += 90  # 30 s left: renewed first
    assert kms.decrypt_data_key(wrapped, CONTEXT) == dek
    assert len(gcp_kms.metadata_requests()) == before + 2
    first, second, third = (r.headers["authorization"] for r in gcp_kms.requests_for(key_name))
    assert first == second != third


def test_revoked_metadata_token_is_fetched_again_once(gcp_kms: GcpKmsServer) -> None:
    key_name = gcp_kms.create_key()
    kms = _metadata_kms(gcp_kms, key_name)
    dek, wrapped = kms.generate_data_key(CONTEXT)
    (first,) = gcp_kms.requests_for(key_name)
    gcp_kms.revoke(first.headers["authorization"].removeprefix("Bearer "))
    assert kms.decrypt_data_key(wrapped, CONTEXT) == dek
    tokens = [r.headers["authorization"] for r in gcp_kms.requests_for(key_name)]
    assert len(tokens) == 3  # encrypt, refused decrypt, decrypt with the new token
    assert tokens[0] == tokens[1] != tokens[2]


def test_no_token_and_no_metadata_server(closed_port: int) -> None:
    kms = GcpKms(
        "projects/p/locations/l/keyRings/r/cryptoKeys/k",
        endpoint=f"http://127.0.0.1:{closed_port}",
        env={"GCE_METADATA_HOST": f"127.0.0.1:{closed_port}"},
    )
    error = _error(lambda: kms.generate_data_key(CONTEXT))
    assert error.code == "kms-credentials-missing"
    assert "GOOGLE_OAUTH_ACCESS_TOKEN" in error.one_line()


def test_invalid_token_from_the_environment_is_access_denied(gcp_kms: GcpKmsServer) -> None:
    token = "ya29.not-a-valid-token-" + "z" * 12
    error = _error(lambda: _env_kms(gcp_kms, gcp_kms.create_key(), token).generate_data_key(CONTEXT))
    assert error.code == "kms-access-denied"
    assert "401" in error.message
    assert token not in error.one_line()


# ---------------------------------------------------------------- error codes


def test_permission_denied(gcp_kms: GcpKmsServer) -> None:
    token = "ya29.no-permission-" + "p" * 12
    gcp_kms.deny(token)
    error = _error(lambda: _env_kms(gcp_kms, gcp_kms.create_key(), token).generate_data_key(CONTEXT))
    assert error.code == "kms-access-denied"
    assert "403 PERMISSION_DENIED" in error.message
    assert token not in error.one_line()


def test_unknown_key(gcp_kms: GcpKmsServer) -> None:
    key_name = "projects/certreconcile-test/locations/europe-west1/keyRings/ring/cryptoKeys/no-such-key"
    kms = _env_kms(gcp_kms, key_name)
    assert _error(lambda: kms.generate_data_key(CONTEXT)).code == "kms-key-not-found"
    wrapped = WrappedKey(key_id=key_name, ciphertext=os.urandom(48))
    assert _error(lambda: kms.decrypt_data_key(wrapped, CONTEXT)).code == "kms-key-not-found"


def test_disabled_key(gcp_kms: GcpKmsServer) -> None:
    key_name = gcp_kms.create_key()
    kms = _env_kms(gcp_kms, key_name)
    _, wrapped = kms.generate_data_key(CONTEXT)
    gcp_kms.set_enabled(key_name, enabled=False)
    assert _error(lambda: kms.decrypt_data_key(wrapped, CONTEXT)).code == "kms-key-disabled"


def test_wrong_aad_fails(gcp_kms: GcpKmsServer) -> None:
    kms = _env_kms(gcp_kms, gcp_kms.create_key())
    dek, wrapped = kms.generate_data_key(CONTEXT)
    error = _error(lambda: kms.decrypt_data_key(wrapped, dataclasses.replace(CONTEXT, row_id="row-2")))
    assert error.code == "kms-decrypt-failed"
    assert "400 INVALID_ARGUMENT" in error.message
    assert base64.b64encode(dek.reveal()).decode() not in error.one_line()


def test_another_master_key_is_refused_before_any_request(gcp_kms: GcpKmsServer) -> None:
    key_name = gcp_kms.create_key()
    kms = _env_kms(gcp_kms, key_name)
    _, wrapped = kms.generate_data_key(CONTEXT)
    other = dataclasses.replace(wrapped, key_id=gcp_kms.create_key())
    assert _error(lambda: kms.decrypt_data_key(other, CONTEXT)).code == "kms-wrong-master-key"
    assert len(gcp_kms.requests_for(key_name)) == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [(500, "kms-unavailable"), (503, "kms-unavailable"), (429, "kms-throttled")],
)
def test_server_errors(gcp_kms: GcpKmsServer, status: int, code: str) -> None:
    """Retried (bounded: 4 tries, no real waiting here), then reported with its code."""
    key_name = gcp_kms.create_key()
    slept: list[float] = []
    kms = GcpKms(key_name, endpoint=gcp_kms.url, env={"GOOGLE_OAUTH_ACCESS_TOKEN": gcp_kms.token},
                 retry=RetryPolicy(sleep=slept.append))  # fmt: skip
    gcp_kms.fail_next.extend([status] * 4)  # as many as the policy tries (the server is shared)
    error = _error(lambda: kms.generate_data_key(CONTEXT))
    assert error.code == code
    assert f"HTTP {status}" in error.message
    assert gcp_kms.token not in error.one_line()
    assert len(gcp_kms.requests_for(key_name)) == 4 and len(slept) == 3


def test_a_passing_unavailability_is_retried(gcp_kms: GcpKmsServer) -> None:
    key_name = gcp_kms.create_key()
    slept: list[float] = []
    kms = GcpKms(key_name, endpoint=gcp_kms.url, env={"GOOGLE_OAUTH_ACCESS_TOKEN": gcp_kms.token},
                 retry=RetryPolicy(sleep=slept.append))  # fmt: skip
    gcp_kms.fail_next.extend([503, 503])
    dek, wrapped = kms.generate_data_key(CONTEXT)
    assert kms.decrypt_data_key(wrapped, CONTEXT) == dek
    assert len(gcp_kms.requests_for(key_name)) == 4  # two refused, the encryption, the decryption
    assert slept == [0.1, 0.2]


# ---------------------------------------------------------------- integrity fields


def _answering(answer: dict[str, Any]) -> httpx.MockTransport:
    return httpx.MockTransport(lambda request: httpx.Response(200, content=json.dumps(answer).encode()))


KEY = "projects/p/locations/l/keyRings/r/cryptoKeys/k"
GOOD_CIPHERTEXT = b"\x01" * 60


@pytest.mark.parametrize(
    "answer",
    [
        {"name": f"{KEY}/cryptoKeyVersions/1", "ciphertext": base64.b64encode(GOOD_CIPHERTEXT).decode(),
         "ciphertextCrc32c": str(crc32c(GOOD_CIPHERTEXT) ^ 1),
         "verifiedPlaintextCrc32c": True, "verifiedAdditionalAuthenticatedDataCrc32c": True},
        {"name": f"{KEY}/cryptoKeyVersions/1", "ciphertext": base64.b64encode(GOOD_CIPHERTEXT).decode(),
         "ciphertextCrc32c": str(crc32c(GOOD_CIPHERTEXT)),
         "verifiedPlaintextCrc32c": False, "verifiedAdditionalAuthenticatedDataCrc32c": True},
        {"name": f"{KEY}/cryptoKeyVersions/1", "ciphertext": base64.b64encode(GOOD_CIPHERTEXT).decode(),
         "verifiedPlaintextCrc32c": True, "verifiedAdditionalAuthenticatedDataCrc32c": True},
    ],
    ids=["ciphertext-crc-mismatch", "plaintext-not-verified", "ciphertext-crc-missing"],
)
def test_encrypt_response_integrity_is_checked(answer: dict[str, Any]) -> None:
    kms = GcpKms(KEY, env={"GOOGLE_OAUTH_ACCESS_TOKEN": "t"}, transport=_answering(answer))
    assert _error(lambda: kms.generate_data_key(CONTEXT)).code == "kms-integrity-failed"


def test_encrypt_by_another_key_is_refused() -> None:
    answer = {
        "name": "projects/p/locations/l/keyRings/r/cryptoKeys/other/cryptoKeyVersions/1",
        "ciphertext": base64.b64encode(GOOD_CIPHERTEXT).decode(),
        "ciphertextCrc32c": str(crc32c(GOOD_CIPHERTEXT)),
        "verifiedPlaintextCrc32c": True,
        "verifiedAdditionalAuthenticatedDataCrc32c": True,
    }
    kms = GcpKms(KEY, env={"GOOGLE_OAUTH_ACCESS_TOKEN": "t"}, transport=_answering(answer))
    assert _error(lambda: kms.generate_data_key(CONTEXT)).code == "kms-error"


def test_decrypt_response_integrity_is_checked() -> None:
    plaintext = os.urandom(32)
    answer = {"plaintext": base64.b64encode(plaintext).decode(), "plaintextCrc32c": str(crc32c(plaintext) ^ 1)}
    kms = GcpKms(KEY, env={"GOOGLE_OAUTH_ACCESS_TOKEN": "t"}, transport=_answering(answer))
    error = _error(lambda: kms.decrypt_data_key(WrappedKey(KEY, GOOD_CIPHERTEXT), CONTEXT))
    assert error.code == "kms-integrity-failed"
    assert base64.b64encode(plaintext).decode() not in error.one_line()


# ---------------------------------------------------------------- wiring


def test_created_from_the_declaration(gcp_kms: GcpKmsServer, tmp_path: Path) -> None:
    key_name = gcp_kms.create_key()
    config = GcpKmsConfig(key_name=key_name, endpoint=gcp_kms.url)
    context = PluginContext(tmp_path, tmp_path / ".data", {"GOOGLE_OAUTH_ACCESS_TOKEN": gcp_kms.token})
    kms = create_kms(KmsSpec(name="gcp", kind="gcp", config=config, fingerprint="test"), context)
    assert isinstance(kms, GcpKms)
    check_round_trip(lambda: kms)


def test_declaration_refuses_a_key_version() -> None:
    with pytest.raises(ValueError, match="key_name"):
        GcpKmsConfig(key_name=f"{KEY}/cryptoKeyVersions/1")


# ---------------------------------------------------------------- TLS and ca_bundle


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for IP 127.0.0.1 (its own CA) and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gcp kms test server")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "server.pem", directory / "server.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def test_tls_endpoint_with_ca_bundle(tmp_path: Path) -> None:
    import ssl

    cert_file, key_file = _self_signed(tmp_path)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    server = GcpKmsServer(tls=context)
    server.start()
    try:
        key_name = server.create_key()
        env = {"GOOGLE_OAUTH_ACCESS_TOKEN": server.token}
        assert server.url.startswith("https://")
        check_round_trip(lambda: GcpKms(key_name, endpoint=server.url, ca_bundle=cert_file, env=env))

        untrusted = GcpKms(key_name, endpoint=server.url, env=env)
        error = _error(lambda: untrusted.generate_data_key(CONTEXT))
        assert error.code == "kms-unavailable"
        assert "ca_bundle" in error.hint

        unreadable = GcpKms(key_name, endpoint=server.url, ca_bundle=tmp_path / "missing.pem", env=env)
        assert _error(lambda: unreadable.generate_data_key(CONTEXT)).code == "kms-config-invalid"
    finally:
        server.stop()
