"""Which journalled key apply resumes with, and which failures to open it allow a discard."""

from __future__ import annotations

import pytest

from certreconcile.actual.store import JournalEntry
from certreconcile.apply.journalled_key import JournalledKey, discardable, journalled_key, live_key_error
from certreconcile.domain.keys import KeyRef
from certreconcile.errors import KmsError

SEALED_A = KeyRef(envelope_json="{}", kms="local", key_id="local:aaaa")
SEALED_B = KeyRef(envelope_json="{}", kms="local", key_id="local:bbbb")


def _entry(step: str, state: str = "done", **detail: str) -> JournalEntry:
    return JournalEntry(run_id=1, idempotency_key="k", name="shop", step=step, state=state, detail=detail)


def _generated(cert_id: str) -> JournalEntry:
    return _entry("key-generated", cert_id=cert_id, key_ref=f"envelope-{cert_id}")


@pytest.mark.parametrize(
    ("entries", "expected"),
    [
        ([], None),
        ([_generated("c1"), _entry("issue", "started")], JournalledKey("c1", "envelope-c1")),
        ([_generated("c1"), _entry("key-discarded", cert_id="c1")], None),
        (
            [_generated("c1"), _entry("key-discarded", cert_id="c1"), _generated("c2")],
            JournalledKey("c2", "envelope-c2"),
        ),
        ([_generated("c1"), _entry("certificate-stored", cert_id="c1")], None),
        ([_generated("c1"), _entry("certificate-stored", "started")], JournalledKey("c1", "envelope-c1")),
    ],
    ids=["nothing", "resumed", "discarded", "new-after-discard", "used", "store-not-done"],
)
def test_the_key_to_resume_with(entries: list[JournalEntry], expected: JournalledKey | None) -> None:
    assert journalled_key(entries) == expected


@pytest.mark.parametrize(
    ("code", "journalled", "live", "expected"),
    [
        ("kms-wrong-master-key", SEALED_A, SEALED_B, True),  # a run with another key file sealed it
        ("kms-wrong-master-key", SEALED_A, None, True),  # a first issuance: no live key to compare
        ("kms-wrong-master-key", SEALED_B, SEALED_B, False),  # the configured key file is the odd one out
        ("kms-decrypt-failed", SEALED_B, SEALED_B, True),  # refused by the right key: damaged or moved
        ("kms-envelope-invalid", None, SEALED_B, True),  # not even an envelope
        ("kms-unavailable", SEALED_A, SEALED_B, False),
        ("kms-throttled", SEALED_A, SEALED_B, False),
        ("kms-access-denied", SEALED_A, SEALED_B, False),
        ("kms-key-disabled", SEALED_A, SEALED_B, False),
        ("kms-key-not-found", SEALED_A, SEALED_B, False),
        ("kms-mismatch", SEALED_A, SEALED_B, False),  # another KMS kind: `kms rewrap` moves it
        ("kms-error", SEALED_A, SEALED_B, False),
    ],
)
def test_only_a_key_that_can_never_open_is_discarded(
    code: str, journalled: KeyRef | None, live: KeyRef | None, expected: bool
) -> None:
    assert discardable(KmsError("x", code=code), journalled, live) is expected


def test_a_live_key_error_names_the_certificate_and_the_way_out() -> None:
    cause = KmsError("sealed under another key", code="kms-wrong-master-key", hint="check the key file")
    error = live_key_error("shop", "c1", cause)
    assert error.code == "kms-wrong-master-key"
    assert error.message == "the private key of shop (certificate c1) cannot be opened: sealed under another key"
    assert error.hint.startswith("check the key file; ")
    assert "`certreconcile rotate shop`" in error.hint
    outage = KmsError("cannot reach the KMS", code="kms-unavailable", hint="retry later")
    assert live_key_error("shop", "c1", outage) is outage
