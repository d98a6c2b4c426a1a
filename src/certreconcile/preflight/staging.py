"""``check --order-staging``: one real order per ACME issuer, from its staging directory, then discarded.

The staging directory: ``letsencrypt-staging`` for an issuer declared with the ``letsencrypt`` preset;
every other ACME issuer (an internal CA, Pebble, an issuer already on staging) is ordered from its own
directory. The order uses a throwaway account (kept and sealed in memory, never stored) and a throwaway key;
the certificate is checked to name the declared domains and then dropped: not stored, not deployed.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import cast

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from certreconcile.actual.store import AcmeAccountRecord, AcmeOrderRecord, RenewalInfoRecord, StateStore
from certreconcile.crypto.keys import build_csr, generate_private_key
from certreconcile.desired.model import CertificateSpec, DesiredState
from certreconcile.domain.certs import read_cert_facts
from certreconcile.errors import IssuerError
from certreconcile.plugins.issuers.acme_config import ACME_DIRECTORY_PRESETS, AcmeIssuerConfig
from certreconcile.plugins.ports import EncryptionContext, IssueRequest, SecretBytes, WrappedKey
from certreconcile.plugins.registry import PluginContext, create_issuer

__all__ = ["EphemeralKms", "MemoryAcmeStore", "order_from_staging", "staging_directory"]


class MemoryAcmeStore:
    """An ACME store that forgets everything: the throwaway account of one check."""

    def __init__(self) -> None:
        self._accounts: dict[str, AcmeAccountRecord] = {}

    @contextlib.contextmanager
    def session(self) -> Iterator[MemoryAcmeStore]:
        yield self

    def get_acme_account(self, directory_url: str) -> AcmeAccountRecord | None:
        return self._accounts.get(directory_url)

    def put_acme_account(self, record: AcmeAccountRecord) -> AcmeAccountRecord:
        return self._accounts.setdefault(record.directory_url, record)

    def acme_order(self, idempotency_key: str) -> AcmeOrderRecord | None:
        return None

    def save_acme_order(self, record: AcmeOrderRecord, at: datetime) -> None:
        return None

    def save_renewal_infos(self, records: Sequence[RenewalInfoRecord]) -> None:
        return None

    def save_unchanged_renewal_infos(
        self, cert_ids: Sequence[str], retry_after: datetime, fetched_at: datetime
    ) -> None:
        return None


class EphemeralKms:
    """Seals the throwaway account key in memory only (the declared KMS is checked on its own, and a local
    KMS must not create its key file during a check)."""

    name = "ephemeral"

    def __init__(self) -> None:
        self._master = AESGCM(AESGCM.generate_key(bit_length=256))

    def generate_data_key(self, context: EncryptionContext) -> tuple[SecretBytes, WrappedKey]:
        dek = SecretBytes(os.urandom(32))
        return dek, self.wrap_data_key(dek, context)

    def wrap_data_key(self, dek: SecretBytes, context: EncryptionContext) -> WrappedKey:
        nonce = os.urandom(12)
        return WrappedKey("ephemeral", nonce + self._master.encrypt(nonce, dek.reveal(), context.as_aad()))

    def decrypt_data_key(self, wrapped: WrappedKey, context: EncryptionContext) -> SecretBytes:
        nonce, body = wrapped.ciphertext[:12], wrapped.ciphertext[12:]
        return SecretBytes(self._master.decrypt(nonce, body, context.as_aad()))


def staging_directory(config: AcmeIssuerConfig) -> str:
    """The directory ``--order-staging`` orders from (see the module docstring)."""
    if config.directory == "letsencrypt":
        return "letsencrypt-staging"
    return config.directory


def order_from_staging(desired: DesiredState, spec: CertificateSpec, context: PluginContext, now: datetime) -> str:
    """Order ``spec``'s domains once from its issuer's staging directory; the certificate is discarded."""
    issuer_spec = desired.issuers[spec.issuer]
    if not isinstance(issuer_spec.config, AcmeIssuerConfig):
        raise IssuerError(f"issuer {spec.issuer} is not an ACME issuer", code="check-not-acme")
    directory = staging_directory(issuer_spec.config)
    staged = replace(issuer_spec, config=issuer_spec.config.model_copy(update={"directory": directory}))
    store = cast(StateStore, MemoryAcmeStore())  # the ACME kind uses its AcmeStore part only
    issuer = create_issuer(staged, context, store, EphemeralKms())
    key = generate_private_key(spec.key_type)
    issued = issuer.issue(
        IssueRequest(
            name=spec.name,
            domains=spec.domains,
            key_type=spec.key_type,
            csr_pem=build_csr(key, spec.domains),
            now=now,
            challenge=spec.challenge.value if spec.challenge is not None else None,
            dns_provider=spec.dns_provider,
        )
    )
    facts = read_cert_facts(issued.cert_pem)
    if set(facts.domains) != set(spec.domains):
        raise IssuerError(
            f"the staging CA issued a certificate for {', '.join(facts.domains)} instead of {', '.join(spec.domains)}",
            code="issuer-wrong-names",
        )
    where = ACME_DIRECTORY_PRESETS.get(directory, directory)
    return f"ordered serial {facts.serial_number[:20]} from {where} with a throwaway account and key, discarded"
