"""The contract every :class:`~certreconcile.plugins.ports.Target` must pass.

Each ``check_*`` function takes a factory returning a ready target (``make_target``) and a
factory returning a NEW bundle for one certificate name at each call (``make_bundle``: a fresh
key and certificate, as a rotation makes; :func:`bundle_maker` builds one), and raises
``AssertionError`` when the target breaks the contract:

* after ``deploy``, ``observe`` reports the bundle's fingerprint (polled up to
  ``verify_timeout()``: reloads may be asynchronous);
* deploying the same bundle twice is fine and changes nothing observable;
* deploying a rotation (a new bundle, same name) makes ``observe`` report the new fingerprint;
* every file a target writes that holds the private key has mode 0600 (:func:`check_key_files_private`,
  for targets that write files);
* a failing deployment raises ``TargetError`` whose texts (message, hint, ``one_line``, the whole
  chain of causes) hold no private key (:func:`check_errors_hold_no_key`, with a broken target).

Used by ``tests/unit/plugins/test_target_contract.py`` and the integration tests of each target.
"""

from __future__ import annotations

import datetime
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from certreconcile.domain.certs import read_cert_facts
from certreconcile.errors import TargetError
from certreconcile.plugins.ports import DeployBundle, SecretBytes, Target, TargetObservation

__all__ = [
    "CHECKS",
    "BundleFactory",
    "TargetFactory",
    "bundle_maker",
    "check_deploy_then_observe",
    "check_errors_hold_no_key",
    "check_idempotent",
    "check_key_files_private",
    "check_rotation",
    "self_signed_bundle",
    "wait_for_fingerprint",
]

TargetFactory = Callable[[], Target]
BundleFactory = Callable[[], DeployBundle]


def self_signed_bundle(name: str, domains: Sequence[str]) -> DeployBundle:
    """A self-signed ECDSA P-256 certificate for ``domains`` with a new key, valid for a day."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, domains[0])])
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(domain) for domain in domains]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return DeployBundle(
        name=name,
        domains=tuple(domains),
        cert_pem=cert_pem,
        chain_pem="",
        key_pem=SecretBytes(key_pem),
        fingerprint=read_cert_facts(cert_pem).fingerprint,
    )


def bundle_maker(name: str = "contract", domains: Sequence[str] = ("contract.example.test",)) -> BundleFactory:
    """A ``make_bundle`` for the checks: a new certificate and key for ``name`` at each call."""
    return lambda: self_signed_bundle(name, domains)


def wait_for_fingerprint(target: Target, bundle: DeployBundle, timeout: float | None = None) -> TargetObservation:
    """Observe until the target reports ``bundle``'s fingerprint, at most ``timeout`` (default: its verify_timeout)."""
    limit = target.verify_timeout().total_seconds() if timeout is None else timeout
    deadline = time.monotonic() + limit
    while True:
        seen = target.observe(bundle.name, bundle.domains)
        if seen.fingerprint == bundle.fingerprint or time.monotonic() >= deadline:
            return seen
        time.sleep(0.1)


def _assert_serves(target: Target, bundle: DeployBundle) -> None:
    seen = wait_for_fingerprint(target, bundle)
    assert seen.fingerprint == bundle.fingerprint, (
        f"{target.name} observed {seen.fingerprint} ({seen.error}), expected {bundle.fingerprint}"
    )
    assert not seen.unknown, f"{target.name} reports unknown although it can be observed"


def check_deploy_then_observe(make_target: TargetFactory, make_bundle: BundleFactory) -> None:
    target, bundle = make_target(), make_bundle()
    target.deploy(bundle)
    _assert_serves(target, bundle)


def check_idempotent(make_target: TargetFactory, make_bundle: BundleFactory) -> None:
    target, bundle = make_target(), make_bundle()
    target.deploy(bundle)
    target.deploy(bundle)
    _assert_serves(target, bundle)
    make_target().deploy(bundle)  # another instance (another run) too
    _assert_serves(target, bundle)


def check_rotation(make_target: TargetFactory, make_bundle: BundleFactory) -> None:
    target, first, second = make_target(), make_bundle(), make_bundle()
    assert first.name == second.name, "make_bundle must keep the name"
    assert first.fingerprint != second.fingerprint, "make_bundle must make a new certificate at each call"
    target.deploy(first)
    _assert_serves(target, first)
    target.deploy(second)
    _assert_serves(target, second)


CHECKS: tuple[Callable[[TargetFactory, BundleFactory], None], ...] = (
    check_deploy_then_observe,
    check_idempotent,
    check_rotation,
)


def check_key_files_private(make_target: TargetFactory, make_bundle: BundleFactory, root: Path) -> None:
    """Every file under ``root`` holding the key is 0600 (and at least one does), after a deploy and a rotation."""
    target = make_target()
    for bundle in (make_bundle(), make_bundle()):
        target.deploy(bundle)
        key = bundle.key_pem.reveal().strip()
        holders = [path for path in root.rglob("*") if path.is_file() and key in path.read_bytes()]
        assert holders, f"no file under {root} holds the key"
        for path in holders:
            mode = path.stat().st_mode & 0o777
            assert mode == 0o600, f"{path} holds the private key with mode {mode:o}"


def check_errors_hold_no_key(make_failing_target: TargetFactory, make_bundle: BundleFactory) -> None:
    """A target that cannot deploy raises a one-line TargetError, and no text of it holds the key."""
    bundle = make_bundle()
    error = _deploy_error(make_failing_target(), bundle)
    texts = [error.one_line(), error.message, error.hint, str(error), repr(error)]
    texts.append("".join(traceback.format_exception(error)))  # the whole chain of causes
    key = bundle.key_pem.reveal().decode()
    key_lines = [line for line in key.splitlines() if len(line) >= 16]
    for text in texts:
        assert "PRIVATE KEY" not in text, f"a private key armour in: {text[:200]}"
        assert not any(line in text for line in key_lines), "a line of the private key leaked"
    assert "\n" not in error.one_line(), f"not one line: {error.one_line()!r}"


def _deploy_error(target: Target, bundle: DeployBundle) -> TargetError:
    try:
        target.deploy(bundle)
    except TargetError as exc:
        return exc
    raise AssertionError(f"deploying to {target.name} did not raise TargetError")
