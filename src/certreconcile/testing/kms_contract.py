"""The contract every :class:`~certreconcile.plugins.ports.Kms` adapter and its fake must pass.

Each ``check_*`` function takes a factory returning a ready KMS (``make_kms``) and raises
``AssertionError`` when the adapter breaks the contract. ``tests/contract/test_kms.py`` runs
:data:`CHECKS` against the local, AWS (moto), Vault (OpenBao) adapters and
:class:`~certreconcile.testing.fake_kms.FakeKms`, and :func:`check_unreachable` against an
adapter pointed at a closed port.

The contract:

* a data key is 256 bits and unwraps under the context it was made for;
* it does not unwrap under another row id, table, key version or purpose (``KmsError``);
* two data keys for the same context differ, and so do their wrapped forms;
* a damaged wrapped key is a ``KmsError``, never another exception;
* :func:`~certreconcile.crypto.envelope.seal` / ``open_envelope`` round-trip, and two
  envelopes swapped between rows do not open;
* the envelope JSON and every error text hold neither the private key nor the data key;
* ``wrap_data_key`` wraps an existing data key under a context, and only that context unwraps it
  (:data:`WRAP_CHECKS`, what ``kms rewrap`` needs);
* an unreachable KMS gives one ``KmsError`` whose one-line text has no traceback and no secret.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import os
import uuid
from collections.abc import Callable, Sequence

from certreconcile.crypto.envelope import open_envelope, seal
from certreconcile.errors import KmsError
from certreconcile.plugins.ports import EncryptionContext, Kms, SecretBytes, WrappedKey

__all__ = [
    "CHECKS",
    "WRAP_CHECKS",
    "KmsFactory",
    "check_ciphertext_differs",
    "check_damaged_wrapped_key_fails",
    "check_envelope_round_trip",
    "check_no_secret_in_key_ref_or_errors",
    "check_rewrap_envelope",
    "check_round_trip",
    "check_swapped_envelopes_fail",
    "check_unreachable",
    "check_wrap_data_key",
    "check_wrong_context_fails",
]

KmsFactory = Callable[[], Kms]

# A stand-in, not a real key; the armour is assembled so no PEM private-key block sits in the source.
_ARMOUR = b"PRIVATE " + b"KEY-----"
_PRIVATE_KEY_PEM = (
    b"-----BEGIN " + _ARMOUR + b"\n"
    b"MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgcontracttestkeymaterial\n"
    b"-----END " + _ARMOUR + b"\n"
)


def _context() -> EncryptionContext:
    return EncryptionContext(table="certificate", row_id=str(uuid.uuid4()))


def _forms(secret: bytes) -> list[str]:
    """The ways a secret could show up in text: raw, base64, hex."""
    forms = [base64.b64encode(secret).decode(), secret.hex(), secret.hex().upper()]
    with contextlib.suppress(UnicodeDecodeError):
        forms.append(secret.decode())
    return forms


def _assert_text_clean(text: str, *secrets: bytes) -> None:
    assert "PRIVATE KEY" not in text, "a private key header leaked"
    assert "Traceback" not in text
    for secret in secrets:
        for form in _forms(secret):
            assert form not in text, "key material leaked"


def _expect_kms_error(call: Callable[[], object], failure: str) -> KmsError:
    """The KmsError ``call`` raises; AssertionError(failure) when it returns, any other error propagates."""
    try:
        call()
    except KmsError as error:
        return error
    raise AssertionError(failure)


def _assert_error_clean(error: KmsError, *secrets: bytes) -> None:
    assert error.code.startswith("kms-"), error.code
    line = error.one_line()
    assert "\n" not in line, line
    for text in (line, str(error), repr(error), error.hint):
        _assert_text_clean(text, *secrets)


def check_round_trip(make_kms: KmsFactory) -> None:
    kms = make_kms()
    assert isinstance(kms.name, str)
    assert kms.name
    context = _context()
    dek, wrapped = kms.generate_data_key(context)
    assert isinstance(dek, SecretBytes)
    assert len(dek.reveal()) == 32
    assert isinstance(wrapped, WrappedKey)
    assert wrapped.key_id
    assert dek.reveal() not in wrapped.ciphertext
    assert kms.decrypt_data_key(wrapped, context) == dek
    equal = EncryptionContext(context.table, context.row_id, context.key_version, context.purpose)
    assert kms.decrypt_data_key(wrapped, equal) == dek  # an equal context, not the same object
    assert "redacted" in repr(dek)


def check_wrong_context_fails(make_kms: KmsFactory) -> None:
    kms = make_kms()
    context = _context()
    dek, wrapped = kms.generate_data_key(context)
    others = {
        "another row": dataclasses.replace(context, row_id=str(uuid.uuid4())),
        "another table": dataclasses.replace(context, table="acme_account"),
        "another key version": dataclasses.replace(context, key_version=context.key_version + 1),
        "another purpose": dataclasses.replace(context, purpose="ca-key"),
    }
    for label, other in others.items():
        error = _expect_kms_error(
            functools.partial(kms.decrypt_data_key, wrapped, other), f"the data key unwrapped under {label}"
        )
        _assert_error_clean(error, dek.reveal())


def check_ciphertext_differs(make_kms: KmsFactory) -> None:
    kms = make_kms()
    context = _context()
    first_dek, first = kms.generate_data_key(context)
    second_dek, second = kms.generate_data_key(context)
    assert first_dek != second_dek
    assert first.ciphertext != second.ciphertext
    assert kms.decrypt_data_key(first, context) == first_dek
    assert kms.decrypt_data_key(second, context) == second_dek


def check_damaged_wrapped_key_fails(make_kms: KmsFactory) -> None:
    kms = make_kms()
    context = _context()
    dek, wrapped = kms.generate_data_key(context)
    blob = wrapped.ciphertext
    middle = len(blob) // 2
    damaged = [
        blob[:middle] + bytes([blob[middle] ^ 0x01]) + blob[middle + 1 :],  # one bit flipped
        blob[: len(blob) - 4],  # truncated
        b"\x00\xff garbage",
    ]
    for candidate in damaged:
        error = _expect_kms_error(
            functools.partial(kms.decrypt_data_key, dataclasses.replace(wrapped, ciphertext=candidate), context),
            "a damaged wrapped key unwrapped",
        )
        _assert_error_clean(error, dek.reveal())


def check_envelope_round_trip(make_kms: KmsFactory) -> None:
    kms = make_kms()
    context = _context()
    key_ref = seal(kms, SecretBytes(_PRIVATE_KEY_PEM), context)
    assert key_ref.kms == kms.name
    assert open_envelope(kms, key_ref, context).reveal() == _PRIVATE_KEY_PEM


def check_swapped_envelopes_fail(make_kms: KmsFactory) -> None:
    kms = make_kms()
    first_context, second_context = _context(), _context()
    first = seal(kms, SecretBytes(_PRIVATE_KEY_PEM), first_context)
    second = seal(kms, SecretBytes(_PRIVATE_KEY_PEM.replace(b"contract", b"othertst")), second_context)
    for key_ref, context in ((first, second_context), (second, first_context)):
        error = _expect_kms_error(
            functools.partial(open_envelope, kms, key_ref, context),
            "an envelope opened under another row's context",
        )
        _assert_error_clean(error, _PRIVATE_KEY_PEM)


class _Recording:
    """A KMS proxy that remembers the data keys it handed out."""

    def __init__(self, inner: Kms) -> None:
        self._inner = inner
        self.name = inner.name
        self.deks: list[bytes] = []

    def generate_data_key(self, context: EncryptionContext) -> tuple[SecretBytes, WrappedKey]:
        dek, wrapped = self._inner.generate_data_key(context)
        self.deks.append(dek.reveal())
        return dek, wrapped

    def decrypt_data_key(self, wrapped: WrappedKey, context: EncryptionContext) -> SecretBytes:
        return self._inner.decrypt_data_key(wrapped, context)

    def wrap_data_key(self, dek: SecretBytes, context: EncryptionContext) -> WrappedKey:
        return self._inner.wrap_data_key(dek, context)


def check_no_secret_in_key_ref_or_errors(make_kms: KmsFactory) -> None:
    kms = _Recording(make_kms())
    context = _context()
    key_ref = seal(kms, SecretBytes(_PRIVATE_KEY_PEM), context)
    (dek,) = kms.deks
    _assert_text_clean(key_ref.envelope_json, dek, _PRIVATE_KEY_PEM)
    _assert_text_clean(repr(key_ref) + str(key_ref), dek, _PRIVATE_KEY_PEM)
    other = dataclasses.replace(context, row_id=str(uuid.uuid4()))
    error = _expect_kms_error(
        lambda: open_envelope(kms, key_ref, other), "an envelope opened under another row's context"
    )
    _assert_error_clean(error, dek, _PRIVATE_KEY_PEM)


def check_wrap_data_key(make_kms: KmsFactory) -> None:
    """An existing data key (e.g. one another KMS made) wraps and unwraps under its context only."""
    kms = make_kms()
    context = _context()
    dek = SecretBytes(os.urandom(32))
    wrapped = kms.wrap_data_key(dek, context)
    assert isinstance(wrapped, WrappedKey)
    assert wrapped.key_id
    assert dek.reveal() not in wrapped.ciphertext
    for form in _forms(dek.reveal()):
        assert form.encode() not in wrapped.ciphertext
    assert kms.decrypt_data_key(wrapped, context) == dek
    assert kms.wrap_data_key(dek, context).ciphertext != wrapped.ciphertext  # fresh nonce each time
    other = dataclasses.replace(context, row_id=str(uuid.uuid4()))
    error = _expect_kms_error(
        functools.partial(kms.decrypt_data_key, wrapped, other), "a wrapped data key unwrapped under another row"
    )
    _assert_error_clean(error, dek.reveal())


def check_rewrap_envelope(make_kms: KmsFactory) -> None:
    """An envelope sealed by another KMS, rewrapped to this one, opens here; its key ciphertext is unchanged."""
    from certreconcile.crypto.envelope import parse_envelope, rewrap_envelope
    from certreconcile.testing.fake_kms import FakeKms

    source = FakeKms(name="source", key_id="source-key")
    kms = make_kms()
    context = _context()
    sealed = seal(source, SecretBytes(_PRIVATE_KEY_PEM), context)
    moved = rewrap_envelope(sealed, source, kms, context)
    assert (moved.kms, moved.key_id) == (kms.name, parse_envelope(moved)["key_id"])
    before, after = parse_envelope(sealed), parse_envelope(moved)
    assert after["ciphertext"] == before["ciphertext"]
    assert after["nonce"] == before["nonce"]
    assert after["wrapped_dek"] != before["wrapped_dek"]
    _assert_text_clean(moved.envelope_json, _PRIVATE_KEY_PEM)
    assert open_envelope(kms, moved, context).reveal() == _PRIVATE_KEY_PEM
    other = dataclasses.replace(context, row_id=str(uuid.uuid4()))
    _expect_kms_error(lambda: open_envelope(kms, moved, other), "a rewrapped envelope opened under another row")


def check_unreachable(make_unreachable: KmsFactory, secrets: Sequence[str] = ()) -> None:
    """``make_unreachable`` returns the adapter pointed at a server that does not answer."""
    kms = make_unreachable()
    context = _context()
    leaks = [secret.encode() for secret in secrets]
    error = _expect_kms_error(lambda: kms.generate_data_key(context), "an unreachable KMS made a data key")
    _assert_error_clean(error, *leaks)
    assert error.code == "kms-unavailable", error.code
    wrapped = WrappedKey(key_id="unreachable", ciphertext=b"x" * 40)
    error = _expect_kms_error(lambda: kms.decrypt_data_key(wrapped, context), "an unreachable KMS unwrapped a data key")
    _assert_error_clean(error, *leaks)
    assert error.code in {"kms-unavailable", "kms-wrong-master-key"}, error.code


#: The checks of ``wrap_data_key`` (what ``kms rewrap`` needs from the KMS it moves keys to).
WRAP_CHECKS: tuple[Callable[[KmsFactory], None], ...] = (check_wrap_data_key, check_rewrap_envelope)

CHECKS: tuple[Callable[[KmsFactory], None], ...] = (
    check_round_trip,
    check_wrong_context_fails,
    check_ciphertext_differs,
    check_damaged_wrapped_key_fails,
    check_envelope_round_trip,
    check_swapped_envelopes_fail,
    check_no_secret_in_key_ref_or_errors,
)
