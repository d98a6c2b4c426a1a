"""Envelope encryption of private keys, whatever the KMS.

A fresh 256-bit data key (DEK) per private key; the key is sealed with AES-256-GCM under
a 96-bit random nonce, with associated data naming its row; the DEK is wrapped by the
KMS under the same context. The result is a JSON envelope stored in ``key_ref``:
ciphertext only. Moving an envelope to another row makes decryption fail.
"""

from __future__ import annotations

import base64
import json
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from certreconcile.crypto.secret import EncryptionContext, Kms, SecretBytes, WrappedKey
from certreconcile.domain.keys import KeyRef
from certreconcile.errors import KmsError

__all__ = [
    "ENVELOPE_VERSION",
    "UNOPENABLE_CODES",
    "check_round_trip",
    "open_envelope",
    "rewrap_envelope",
    "seal",
    "unopenable",
]

ENVELOPE_VERSION = 1

#: The codes of a :class:`KmsError` proving that an envelope will never open under the configured
#: KMS: the KMS answered and refused the ciphertext, or it was sealed under another master key, or
#: the envelope is damaged. An outage (``kms-unavailable``), throttling, denied access, a disabled or
#: missing key or another KMS kind (``kms-mismatch``: `kms rewrap` moves it) prove nothing of the kind.
UNOPENABLE_CODES = frozenset({"kms-decrypt-failed", "kms-wrong-master-key", "kms-envelope-invalid"})


def unopenable(error: KmsError) -> bool:
    """Does ``error`` prove the envelope can never be opened by this KMS (not a passing failure)?"""
    return error.code in UNOPENABLE_CODES


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def seal(kms: Kms, plaintext: SecretBytes, context: EncryptionContext) -> KeyRef:
    dek, wrapped = kms.generate_data_key(context)
    nonce = os.urandom(12)
    ciphertext = AESGCM(dek.reveal()).encrypt(nonce, plaintext.reveal(), context.as_aad())
    envelope = {
        "v": ENVELOPE_VERSION,
        "alg": "AES-256-GCM",
        "kms": kms.name,
        "key_id": wrapped.key_id,
        "wrapped_dek": _b64(wrapped.ciphertext),
        "nonce": _b64(nonce),
        "ciphertext": _b64(ciphertext),
        "context": context.as_mapping(),
    }
    return KeyRef(envelope_json=json.dumps(envelope, sort_keys=True), kms=kms.name, key_id=wrapped.key_id)


def parse_envelope(key_ref: KeyRef | str) -> dict[str, object]:
    text = key_ref.envelope_json if isinstance(key_ref, KeyRef) else key_ref
    try:
        envelope = json.loads(text)
    except ValueError as exc:
        raise KmsError("a stored key reference is not a valid envelope", code="kms-envelope-invalid") from exc
    if not isinstance(envelope, dict) or envelope.get("v") != ENVELOPE_VERSION:
        raise KmsError("a stored key reference has an unknown envelope version", code="kms-envelope-invalid")
    return envelope


def key_ref_from_json(text: str) -> KeyRef:
    envelope = parse_envelope(text)
    return KeyRef(envelope_json=text, kms=str(envelope["kms"]), key_id=str(envelope["key_id"]))


def open_envelope(kms: Kms, key_ref: KeyRef, context: EncryptionContext) -> SecretBytes:
    envelope = parse_envelope(key_ref)
    if envelope["kms"] != kms.name:
        raise KmsError(
            f"this key was sealed by the {envelope['kms']!s} KMS, but the {kms.name} KMS is configured",
            code="kms-mismatch",
            hint="configure the KMS the keys were sealed with, or run `certreconcile kms rewrap`",
        )
    try:
        wrapped = WrappedKey(key_id=str(envelope["key_id"]), ciphertext=base64.b64decode(str(envelope["wrapped_dek"])))
        nonce = base64.b64decode(str(envelope["nonce"]))
        ciphertext = base64.b64decode(str(envelope["ciphertext"]))
    except ValueError as exc:
        raise KmsError("a stored key reference is damaged", code="kms-envelope-invalid") from exc
    dek = kms.decrypt_data_key(wrapped, context)
    try:
        return SecretBytes(AESGCM(dek.reveal()).decrypt(nonce, ciphertext, context.as_aad()))
    except InvalidTag as exc:
        raise KmsError(
            f"the private key of {context.table} {context.row_id} does not decrypt under its own context",
            code="kms-decrypt-failed",
            hint="the stored key_ref belongs to another row or was altered",
        ) from exc


def rewrap_envelope(key_ref: KeyRef, old: Kms, new: Kms, context: EncryptionContext) -> KeyRef:
    """The same envelope with its DEK unwrapped by ``old`` and wrapped again by ``new``.

    Only the wrapped DEK, ``kms`` and ``key_id`` change: nonce and private-key ciphertext stay
    as they are, so the private key is never decrypted (no plaintext key exists at any time).
    """
    envelope = parse_envelope(key_ref)
    if envelope["kms"] != old.name:
        raise KmsError(f"this key was sealed by the {envelope['kms']!s} KMS, not by {old.name}", code="kms-mismatch")
    try:
        wrapped = WrappedKey(key_id=str(envelope["key_id"]), ciphertext=base64.b64decode(str(envelope["wrapped_dek"])))
    except ValueError as exc:
        raise KmsError("a stored key reference is damaged", code="kms-envelope-invalid") from exc
    dek = old.decrypt_data_key(wrapped, context)
    rewrapped = new.wrap_data_key(dek, context)
    moved = {**envelope, "kms": new.name, "key_id": rewrapped.key_id, "wrapped_dek": _b64(rewrapped.ciphertext)}
    return KeyRef(envelope_json=json.dumps(moved, sort_keys=True), kms=new.name, key_id=rewrapped.key_id)


def check_round_trip(kms: Kms) -> str:
    """``certreconcile check`` of a KMS: make a data key, unwrap it again, compare. Stores nothing.

    Raises the KMS's own KmsError (credentials, permissions, a missing key), or ``kms-check-failed``."""
    context = EncryptionContext(table="Check", row_id="certreconcile-check", purpose="check")
    dek, wrapped = kms.generate_data_key(context)
    if kms.decrypt_data_key(wrapped, context).reveal() != dek.reveal():
        raise KmsError(
            f"the {kms.name} KMS unwrapped a test data key to another value",
            code="kms-check-failed",
            hint="check the KMS configuration: its key does not give back what it wrapped",
        )
    return f"wrapped and unwrapped a test data key under {wrapped.key_id}"
