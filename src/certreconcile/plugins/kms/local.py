"""The local KMS: a 256-bit master key in a 0600 file wraps every data key (AES-256-GCM).

For laptops, demos and single-host installations. The master key file is the one secret
to back up; `certreconcile init` creates it, and so does the first apply that needs it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import tempfile
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from certreconcile.crypto.envelope import check_round_trip
from certreconcile.errors import KmsError
from certreconcile.plugins.ports import EncryptionContext, SecretBytes, WrappedKey

__all__ = ["LocalKms", "ensure_master_key"]

_KEY_BYTES = 32


def ensure_master_key(path: Path) -> bool:
    """Create a new master key file (mode 0600) unless one exists. Returns True if created.

    The key is written to a temporary file first and then hard-linked into place, so a
    concurrent reader never sees a half-written key, and of two creators only one wins.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        return False
    fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.b64encode(os.urandom(_KEY_BYTES)).decode("ascii") + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temp, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(temp)


class LocalKms:
    name = "local"

    def __init__(self, key_file: Path, *, create: bool = True) -> None:
        self._key_file = key_file
        self._create = create
        self._master: bytes | None = None

    def _master_key(self) -> bytes:
        if self._master is None:
            if self._create:
                ensure_master_key(self._key_file)
            try:
                text = self._key_file.read_text()
            except FileNotFoundError as exc:
                raise KmsError(
                    f"the local KMS key file {self._key_file} does not exist",
                    code="kms-key-missing",
                    hint="restore it from your backup, or set CERTRECONCILE_LOCAL_KMS_KEY_FILE",
                ) from exc
            try:
                key = base64.b64decode(text.strip(), validate=True)
            except ValueError as exc:
                raise KmsError(
                    f"the local KMS key file {self._key_file} is not base64", code="kms-key-invalid"
                ) from exc
            if len(key) != _KEY_BYTES:
                raise KmsError(
                    f"the local KMS key file {self._key_file} does not hold a 256-bit key", code="kms-key-invalid"
                )
            self._master = key
        return self._master

    def check(self) -> str:
        """``certreconcile check``: never creates the key file (a check changes nothing lasting)."""
        if self._master is None and self._create and not self._key_file.exists():
            return f"the key file {self._key_file} does not exist yet: the first apply creates it"
        return check_round_trip(self)

    @property
    def key_id(self) -> str:
        return "local:" + hashlib.sha256(b"certreconcile-key-id" + self._master_key()).hexdigest()[:16]

    def generate_data_key(self, context: EncryptionContext) -> tuple[SecretBytes, WrappedKey]:
        dek = SecretBytes(os.urandom(_KEY_BYTES))
        return dek, self.wrap_data_key(dek, context)

    def wrap_data_key(self, dek: SecretBytes, context: EncryptionContext) -> WrappedKey:
        if len(dek.reveal()) != _KEY_BYTES:
            raise KmsError("a data key to wrap is not 256 bits", code="kms-error")
        nonce = os.urandom(12)
        wrapped = nonce + AESGCM(self._master_key()).encrypt(nonce, dek.reveal(), context.as_aad() + b"|dek")
        return WrappedKey(key_id=self.key_id, ciphertext=wrapped)

    def decrypt_data_key(self, wrapped: WrappedKey, context: EncryptionContext) -> SecretBytes:
        if wrapped.key_id != self.key_id:
            raise KmsError(
                f"this data key was sealed under local master key {wrapped.key_id}, but the local KMS key file"
                f" {self._key_file} holds {self.key_id}",
                code="kms-wrong-master-key",
                hint="the local KMS key file differs from the one that sealed this key: check that"
                " CERTRECONCILE_LOCAL_KMS_KEY_FILE (or kms.local.key_file) names the key file of the state",
            )
        nonce, body = wrapped.ciphertext[:12], wrapped.ciphertext[12:]
        try:
            return SecretBytes(AESGCM(self._master_key()).decrypt(nonce, body, context.as_aad() + b"|dek"))
        except InvalidTag as exc:
            raise KmsError(
                f"the data key of {context.table} {context.row_id} does not unwrap under its own context",
                code="kms-decrypt-failed",
                hint="the stored key_ref belongs to another row or was altered",
            ) from exc
