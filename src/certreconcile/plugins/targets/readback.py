"""Pieces shared by the file-writing targets: the PEM file set and verification by read-back."""

from __future__ import annotations

from pathlib import Path

from certreconcile.domain.certs import read_cert_facts, split_pem_chain
from certreconcile.plugins.ports import DeployBundle, TargetObservation
from certreconcile.plugins.targets.safe_files import FileContent

__all__ = ["observe_pem_file", "observe_pem_text", "pem_files"]


def pem_files(bundle: DeployBundle) -> dict[str, FileContent]:
    """``fullchain.pem``, ``chain.pem``, ``cert.pem`` (0644) and ``privkey.pem`` (0600, the only secret)."""
    return {
        "fullchain.pem": FileContent(bundle.fullchain_pem.encode(), 0o644),
        "chain.pem": FileContent(bundle.chain_pem.encode(), 0o644),
        "cert.pem": FileContent(bundle.cert_pem.encode(), 0o644),
        "privkey.pem": FileContent(bundle.key_pem.reveal(), 0o600),
    }


def observe_pem_text(text: str, where: str) -> TargetObservation:
    """The leaf (first certificate) of ``text``; ``where`` names its origin in errors."""
    blocks = split_pem_chain(text)
    if not blocks:
        return TargetObservation(fingerprint=None, error=f"{where} holds no certificate")
    try:
        facts = read_cert_facts(blocks[0])
    except ValueError:
        return TargetObservation(fingerprint=None, error=f"{where} holds an unreadable certificate")
    return TargetObservation(
        fingerprint=facts.fingerprint, serial_number=facts.serial_number, not_after=facts.not_after
    )


def observe_pem_file(path: Path) -> TargetObservation:
    try:
        text = path.read_text()
    except OSError as exc:
        return TargetObservation(fingerprint=None, error=f"{path}: {exc.strerror}")
    return observe_pem_text(text, str(path))
