"""``certreconcile import``: adopt a certificate that exists already (issued by another tool) without reissuing it.

The certificate must belong to a declared name: the same set of domains, a key of the declared key
type that matches it, not expired, and the name must hold no live certificate yet. Then, in one
transaction: the key sealed by the KMS (as apply seals the keys it makes), the certificate stored with
its real dates and ``origin`` ``imported``, the audit row ``imported``, the state serial bumped.

What the next plan does with it is what is true of it: nothing until its renewal falls due, except
deploying it to the declared targets not known to serve it. An import from a target records that
target as verified (it serves exactly this certificate); once every declared target is, the
certificate is ``active``, else ``issued`` (a pending redistribution, as after an interrupted apply).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec

from certreconcile.actual.store import CertificateRow, StateStore
from certreconcile.adopt.sources import Adopted, from_directory, from_files, from_target
from certreconcile.apply.results import certificate_context
from certreconcile.audit.events import AuditAction, AuditEvent
from certreconcile.crypto.envelope import seal
from certreconcile.crypto.keys import load_private_key, public_key_matches
from certreconcile.desired.model import CertificateSpec, DesiredState
from certreconcile.domain.certs import CertFacts, read_cert_facts, split_pem_chain
from certreconcile.domain.keys import KeyRef, KeyType
from certreconcile.domain.policy import Origin
from certreconcile.domain.status import CertStatus
from certreconcile.errors import CertReconcileError
from certreconcile.plugins.ports import Kms

__all__ = ["Adopted", "ImportResult", "adopt", "declared", "from_directory", "from_files", "from_target", "vet"]


@dataclass(frozen=True, slots=True)
class ImportResult:
    name: str
    cert_id: str
    facts: CertFacts
    status: CertStatus
    verified_on: tuple[str, ...]  # the targets known to serve it
    pending_targets: tuple[str, ...]  # declared targets the next apply deploys it to


def declared(desired: DesiredState, name: str) -> CertificateSpec:
    spec = desired.certificates.get(name)
    if spec is None:
        raise CertReconcileError(
            f"{name!r} is not declared",
            code="name-unknown",
            hint="declare the certificate (name, domains, issuer) first; import adopts declared names only",
        )
    return spec


_CURVES = {"secp256r1": KeyType.ECDSA_P256, "secp384r1": KeyType.ECDSA_P384}


def _key_type(adopted: Adopted) -> KeyType | None:
    """The declared key type this key is, or None (another curve, another RSA size)."""
    key = load_private_key(adopted.key_pem)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return _CURVES.get(key.curve.name)
    return next((kt for kt in KeyType if kt.is_rsa and kt.rsa_bits == key.key_size), None)


def _check_chain(adopted: Adopted) -> None:
    """The chain's first certificate must have signed the leaf (a chain of another certificate breaks clients)."""
    blocks = split_pem_chain(adopted.chain_pem)
    if not blocks:
        return
    leaf = x509.load_pem_x509_certificate(adopted.cert_pem.encode())
    issuer = x509.load_pem_x509_certificate(blocks[0].encode())
    try:
        leaf.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        raise CertReconcileError(
            f"the chain starts with {issuer.subject.rfc4514_string()[:200]}, which did not issue the certificate"
            f" (issued by {leaf.issuer.rfc4514_string()[:200]})",
            code="import-chain-mismatch",
            hint="pass the intermediates of this certificate (--chain), or omit --chain",
        ) from None


def vet(adopted: Adopted, spec: CertificateSpec, now: datetime) -> CertFacts:
    """The certificate's facts once it is proven to be ``spec``'s: domains, key, key type, validity."""
    facts = read_cert_facts(adopted.cert_pem)
    if set(facts.domains) != set(spec.domains):
        raise CertReconcileError(
            f"the certificate names {', '.join(facts.domains) or 'no DNS name'}; {spec.name} declares "
            f"{', '.join(spec.domains)}",
            code="import-domains-mismatch",
            hint="import the certificate issued for exactly the declared domains, or change the declaration",
        )
    if not public_key_matches(adopted.cert_pem, load_private_key(adopted.key_pem)):
        raise CertReconcileError(
            "the private key does not belong to the certificate",
            code="import-key-mismatch",
            hint="pass the key the certificate was issued for",
        )
    key_type = _key_type(adopted)
    if key_type is not spec.key_type:
        raise CertReconcileError(
            f"the key is {key_type.value if key_type else 'of a type certreconcile does not issue'}; {spec.name} "
            f"declares {spec.key_type.value}",
            code="import-key-type-mismatch",
            hint=f"declare key_type: {key_type.value} to adopt it (the next renewals may change it back)"
            if key_type else "let apply issue a new certificate instead",
        )
    _check_chain(adopted)
    if facts.not_after <= now:
        raise CertReconcileError(
            f"the certificate expired on {facts.not_after:%Y-%m-%d %H:%M} UTC",
            code="import-expired",
            hint="nothing to adopt: `certreconcile apply` issues a new one",
        )
    return facts


def adopt(
    adopted: Adopted, desired: DesiredState, name: str, store: StateStore, kms: Kms, now: datetime, actor: str
) -> ImportResult:
    """Vet ``adopted`` for ``name``, seal its key, store and audit it in one transaction (nothing on failure)."""
    spec = declared(desired, name)
    facts = vet(adopted, spec, now)
    cert_id = str(uuid.uuid4())
    key_ref = seal(kms, adopted.key_pem, certificate_context(cert_id))  # before any row: a KMS failure writes nothing
    verified = tuple(t for t in spec.targets if t == adopted.served_by)
    pending = tuple(t for t in spec.targets if t not in verified)
    status = CertStatus.ISSUED if pending else CertStatus.ACTIVE
    with store.session() as session, session.lock_name(name):
        current = session.current_certificate(name)
        if current is not None and current.status not in (CertStatus.EXPIRED, CertStatus.REVOKED):
            raise CertReconcileError(
                f"{name} already has a certificate in the state (serial {current.serial_number}, {current.status})",
                code="import-name-managed",
                hint=f"import adopts names with no live certificate; `certreconcile rotate {name}` replaces it",
            )
        with session.transaction():
            session.insert_certificate(_row(cert_id, spec, desired, adopted, facts, key_ref, status, now))
            for target in verified:  # it serves exactly this certificate: seen there just now
                declaration = desired.targets[target].fingerprint
                session.record_distribution(cert_id, target, facts.fingerprint, pushed_at=None, verified_at=now,
                                            last_error=None, target_fingerprint=declaration)  # fmt: skip
            detail = {"serial": facts.serial_number, "fingerprint": facts.fingerprint, "source": adopted.source,
                      "not_after": facts.not_after.isoformat(), "issuer_dn": facts.issuer[:300],
                      "kms": key_ref.kms, "key_id": key_ref.key_id}  # fmt: skip
            if verified:
                detail["verified_on"] = ",".join(verified)
            session.append_audit(AuditEvent(cert_id, name, AuditAction.IMPORTED, actor, now, detail))
            session.clear_failures(name)
            session.bump_serial()
    return ImportResult(name, cert_id, facts, status, verified, pending)


def _row(
    cert_id: str,
    spec: CertificateSpec,
    desired: DesiredState,
    adopted: Adopted,
    facts: CertFacts,
    key_ref: KeyRef,
    status: CertStatus,
    now: datetime,
) -> CertificateRow:
    return CertificateRow(
        id=cert_id,
        name=spec.name,
        domains=spec.domains,  # the declared order (the plan compares it as declared)
        issuer=spec.issuer,
        key_type=spec.key_type,
        serial_number=facts.serial_number,
        not_before=facts.not_before,
        not_after=facts.not_after,
        status=status,
        fingerprint=facts.fingerprint,
        key_ref=key_ref,
        cert_pem=adopted.cert_pem,
        chain_pem=adopted.chain_pem,
        on_delete=spec.on_delete,
        issuer_fingerprint=desired.issuers[spec.issuer].fingerprint,
        created_at=now,
        origin=Origin.IMPORTED,
    )
