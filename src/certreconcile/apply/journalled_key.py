"""The key an interrupted run journalled for a change, and what to do when a key does not open.

apply seals a change's new private key and journals it (``key-generated``) before asking the CA,
so a rerun after a crash resumes with that key (and the order placed for it). A journalled key
that can never be opened would block the name for good: sealed under another master key (a run
with the wrong ``CERTRECONCILE_LOCAL_KMS_KEY_FILE``), refused by the KMS or damaged. Such a key is
discarded (journalled ``key-discarded``, audited ``key_discarded``) and a new key is made; an ACME
order is bound to its key's cert id, so the order of the discarded key is never reused. Kept:

* after an outage, throttling or denied access: that proves nothing, the next run retries;
* when the name's live certificate was sealed under the same master key as the journalled key:
  then the configured KMS is the odd one out, and the good key stays for the run that has it.

A stored certificate's key is the live key: it is never discarded, its error names the cause.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from certreconcile.actual.journal_step import JournalState, JournalStep
from certreconcile.actual.store import JournalEntry
from certreconcile.crypto.envelope import unopenable
from certreconcile.domain.keys import KeyRef
from certreconcile.errors import KmsError

__all__ = [
    "JournalledKey",
    "discardable",
    "journalled_key",
    "live_key_error",
    "odd_kms_error",
]


@dataclass(frozen=True, slots=True)
class JournalledKey:
    cert_id: str  # the certificate row the key was sealed for (it does not exist yet)
    envelope_json: str  # ciphertext only


def journalled_key(entries: Sequence[JournalEntry]) -> JournalledKey | None:
    """The key to resume with: the newest journalled one, unless it was used or discarded since."""
    for entry in reversed(entries):
        if entry.state != JournalState.DONE:
            continue
        if entry.step in (JournalStep.CERTIFICATE_STORED, JournalStep.KEY_DISCARDED):
            return None  # used (a repeated change needs a new key) or given up
        if entry.step == JournalStep.KEY_GENERATED:
            return JournalledKey(cert_id=entry.detail["cert_id"], envelope_json=entry.detail["key_ref"])
    return None


def _same_master_key(first: KeyRef | None, second: KeyRef | None) -> bool:
    return first is not None and second is not None and (first.kms, first.key_id) == (second.kms, second.key_id)


def discardable(error: KmsError, journalled: KeyRef | None, live: KeyRef | None) -> bool:
    """May a journalled key that failed to open with ``error`` be discarded?

    ``journalled`` is None when its envelope does not even parse; ``live`` is the key of the
    name's current certificate, if any.
    """
    if not unopenable(error):
        return False
    return not (error.code == "kms-wrong-master-key" and _same_master_key(journalled, live))


def odd_kms_error(name: str, journalled: KeyRef, error: KmsError) -> KmsError:
    """The error when the configured KMS holds neither the journalled nor the live key's master key."""
    return KmsError(
        f"{name}: its journalled key and its current certificate were both sealed under {journalled.kms} master key"
        f" {journalled.key_id}, which the configured KMS does not hold ({error.message})",
        code=error.code,
        hint=error.hint or "configure the KMS key the state was created with",
    )


def live_key_error(name: str, cert_id: str, error: KmsError) -> KmsError:
    """The error for a stored certificate's key that does not open: which key, why, what to do."""
    if not unopenable(error):
        return error
    replace = f"`certreconcile rotate {name}` replaces it with a new key"
    return KmsError(
        f"the private key of {name} (certificate {cert_id}) cannot be opened: {error.message}",
        code=error.code,
        hint=f"{error.hint}; if that cannot be fixed, {replace}" if error.hint else replace,
    )
