"""Where ``certreconcile import`` reads an existing certificate and its key from.

* PEM files: ``--cert`` (the leaf, or the leaf followed by its chain), ``--key``, optionally ``--chain``;
* a directory (``--from-dir``) in one of the layouts other tools write:
  ``fullchain.pem`` + ``privkey.pem`` (certbot's ``live/<name>/``, a files/nginx target's ``<cert_dir>/<name>/``,
  also ``<dir>/<name>/`` itself), or lego's ``certificates/<domain>.crt`` + ``.key`` (+ ``.issuer.crt``),
  the directory given being lego's ``--path`` or its ``certificates/`` folder;
* what a target serves (``--from-target``): its ``verify`` address by TLS handshake (the chain as sent),
  else the ``fullchain.pem`` a file-based target holds; the key from ``--key``.

Private keys are read into :class:`SecretBytes` and never shown; errors name files, never contents.
"""

from __future__ import annotations

import socket
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from certreconcile.crypto.keys import load_private_key, private_key_pem
from certreconcile.crypto.secret import SecretBytes
from certreconcile.desired.model import CertificateSpec, TargetSpec
from certreconcile.domain.certs import split_pem_chain
from certreconcile.errors import CertReconcileError

__all__ = ["Adopted", "from_directory", "from_files", "from_target"]

_MAX_FILE = 1 << 20  # no PEM bundle is a megabyte


@dataclass(frozen=True, slots=True)
class Adopted:
    cert_pem: str  # the leaf
    chain_pem: str  # the intermediates as found (may be empty)
    key_pem: SecretBytes
    source: str  # for the audit: "files", "directory (lego)", "target web"... never a secret
    served_by: str | None = None  # the target the certificate was read from (it serves it now)


def _read(path: Path, what: str) -> bytes:
    try:
        if path.stat().st_size > _MAX_FILE:
            raise CertReconcileError(f"the {what} file {path} is larger than 1 MiB", code="import-file-invalid")
        return path.read_bytes()
    except OSError as exc:
        raise CertReconcileError(
            f"cannot read the {what} file {path}: {exc.strerror or exc}",
            code="import-file-unreadable",
            hint="check the path and that this user may read it",
        ) from exc


def _certificates(data: bytes, path: Path | str, what: str) -> list[str]:
    blocks = split_pem_chain(data.decode("ascii", errors="replace"))
    for block in blocks:
        try:
            x509.load_pem_x509_certificate(block.encode())
        except ValueError as exc:
            raise CertReconcileError(f"the {what} {path} holds a damaged PEM certificate", code="import-file-invalid",
                                     hint="pass the PEM file the other tool wrote, unchanged") from exc  # fmt: skip
    if not blocks:
        raise CertReconcileError(f"the {what} {path} holds no PEM certificate", code="import-file-invalid",
                                 hint="pass a PEM file (-----BEGIN CERTIFICATE-----)")  # fmt: skip
    return blocks


def _key(path: Path) -> SecretBytes:
    """The private key of ``path`` as PKCS#8 PEM (a file may also hold certificates: HAProxy's combined PEM)."""
    data = SecretBytes(_read(path, "key"))
    try:
        return private_key_pem(load_private_key(data))
    except (ValueError, TypeError):
        raise CertReconcileError(
            f"the key file {path} holds no unencrypted ECDSA or RSA PEM private key",
            code="import-file-invalid",
            hint="pass the private key as PEM without a passphrase (e.g. `openssl pkey -in KEY -out plain.pem`)",
        ) from None


def from_files(cert: Path, key: Path, chain: Path | None = None) -> Adopted:
    blocks = _certificates(_read(cert, "certificate"), cert, "certificate file")
    rest = "".join(blocks[1:])
    if chain is not None:
        rest = "".join(_certificates(_read(chain, "chain"), chain, "chain file"))
    return Adopted(blocks[0], rest, _key(key), "files")


def _lego_names(spec: CertificateSpec) -> list[str]:
    """lego names its files after the first domain, ``*`` written as ``_`` (its sanitizedDomain)."""
    return [domain.replace("*", "_") for domain in spec.domains]


def from_directory(directory: Path, spec: CertificateSpec) -> Adopted:
    """The first layout found in ``directory`` (see the module docstring)."""
    for folder in (directory, directory / spec.name):
        if (folder / "fullchain.pem").is_file() and (folder / "privkey.pem").is_file():
            adopted = from_files(folder / "fullchain.pem", folder / "privkey.pem")
            return Adopted(adopted.cert_pem, adopted.chain_pem, adopted.key_pem, "directory (fullchain.pem)")
    for folder in (directory / "certificates", directory):
        for stem in _lego_names(spec):
            crt, key, issuer = (folder / f"{stem}{suffix}" for suffix in (".crt", ".key", ".issuer.crt"))
            if crt.is_file() and key.is_file():
                adopted = from_files(crt, key, issuer if issuer.is_file() and not _bundled(crt) else None)
                return Adopted(adopted.cert_pem, adopted.chain_pem, adopted.key_pem, "directory (lego)")
    expected = ", ".join(f"certificates/{stem}.crt" for stem in _lego_names(spec))
    raise CertReconcileError(
        f"{directory} holds no certificate of {spec.name} in a known layout",
        code="import-layout-unknown",
        hint=f"expected fullchain.pem and privkey.pem (in it or in {spec.name}/), or lego's {expected} with its .key;"
        " else pass --cert and --key",
    )


def _bundled(crt: Path) -> bool:
    """lego writes the issuer into ``.crt`` too unless run with --no-bundle."""
    return len(split_pem_chain(_read(crt, "certificate").decode("ascii", errors="replace"))) > 1


def _served_chain(address: str, server_name: str, timeout: float = 10.0) -> list[str]:
    """The certificates a TLS server sends for ``server_name``, leaf first (not verified: compared later)."""
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    try:
        with (
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw,
            context.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            sslobj = getattr(tls, "_sslobj", None)
            chain = getattr(sslobj, "get_unverified_chain", None)
            if callable(chain):  # CPython >= 3.10 (public as SSLSocket.get_unverified_chain in 3.13)
                return [str(cert.public_bytes()) for cert in chain() or ()]  # PEM by default
            der = tls.getpeercert(binary_form=True)
            return [ssl.DER_cert_to_PEM_cert(der)] if der else []
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise CertReconcileError(
            f"the TLS handshake with {address} (server name {server_name}) failed: {exc}",
            code="import-target-unreachable",
            hint="check the target's verify address and that it serves this certificate",
        ) from exc


def from_target(target: str, target_spec: TargetSpec, folder: Path | None, spec: CertificateSpec, key: Path) -> Adopted:
    """What ``target`` serves for ``spec`` (its ``verify`` address, else ``folder``/fullchain.pem) + ``key``."""
    if target_spec.verify:
        server_name = target_spec.sni or spec.primary.replace("*.", "certreconcile-probe.", 1)
        blocks = _served_chain(target_spec.verify, server_name)
        where = f"target {target} ({target_spec.verify})"
    elif folder is not None:
        path = folder / "fullchain.pem"
        blocks = _certificates(_read(path, "certificate"), path, "certificate file")
        where = f"target {target} ({path})"
    else:
        raise CertReconcileError(
            f"target {target} cannot show what it serves: it declares no verify address and keeps no files",
            code="import-target-unobservable",
            hint="declare verify: HOST:PORT on the target, or import with --cert and --key",
        )
    if not blocks:
        raise CertReconcileError(f"{where} sent no certificate", code="import-target-unreachable")
    return Adopted(blocks[0], "".join(blocks[1:]), _key(key), where, served_by=target)
