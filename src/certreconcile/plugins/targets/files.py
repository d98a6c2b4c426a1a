"""The files target: ``<dir>/<name>/{fullchain,chain,cert,privkey}.pem``, written atomically.

``privkey.pem`` is created with mode 0600 (the only plaintext key a target writes). Nothing is
written through a symbolic link below ``dir`` (safe_files.py): a ``<name>`` that is one is
refused. After writing, an optional ``reload_command`` runs (no shell; split like a POSIX shell would).
Without ``verify:``, the target is verified by reading the files back; with it, by a TLS
handshake to that address.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from datetime import timedelta
from pathlib import Path

from certreconcile.desired.model import DEFAULT_VERIFY_TIMEOUT
from certreconcile.domain.certs import read_cert_facts, split_pem_chain
from certreconcile.errors import TargetError
from certreconcile.plugins.paths import declared_path
from certreconcile.plugins.ports import DeployBundle, TargetObservation
from certreconcile.plugins.targets.files_config import FilesTargetConfig
from certreconcile.plugins.targets.handshake import observe_served
from certreconcile.plugins.targets.readback import pem_files
from certreconcile.plugins.targets.safe_files import FileSet, write_file_set

__all__ = ["FilesTarget"]


class FilesTarget:
    def __init__(
        self,
        name: str,
        config: FilesTargetConfig,
        base_dir: Path,
        verify: str | None = None,
        verify_timeout: timedelta = DEFAULT_VERIFY_TIMEOUT,
        sni: str | None = None,
    ) -> None:
        self.name = name
        self._dir = declared_path(config.dir, base_dir)
        self._reload_command = config.reload_command
        self._base_dir = base_dir
        self._verify = verify
        self._verify_timeout = verify_timeout
        self._sni = sni

    def folder(self, certificate_name: str) -> Path:
        return self._dir / certificate_name

    def check(self) -> str:
        """``certreconcile check``: the directory (or the nearest existing parent apply would create it in)
        is writable by this user. Nothing is written."""
        existing = self._dir
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
            raise TargetError(
                f"target {self.name}: {existing} is not a directory this user can write into",
                code="target-write-failed",
                hint="check that the directory exists and is writable by this user",
            )
        if existing == self._dir:
            return f"{self._dir} is writable"
        return f"{existing} is writable ({self._dir} will be made there)"

    def deploy(self, bundle: DeployBundle) -> None:
        folder = self.folder(bundle.name)
        files = {f"{bundle.name}/{name}": content for name, content in pem_files(bundle).items()}
        try:
            # The key first: a reader that sees the new certificate must find the new key.
            write_file_set(FileSet(self.name, self._dir, files))
        except OSError as exc:
            raise TargetError(
                f"target {self.name}: cannot write into {folder}: {exc.strerror}",
                code="target-write-failed",
                hint="check that the directory exists and is writable by this user",
            ) from exc
        if self._reload_command:
            self._reload()

    def _reload(self) -> None:
        assert self._reload_command is not None
        try:
            result = subprocess.run(
                shlex.split(self._reload_command),
                cwd=self._base_dir,
                capture_output=True,
                timeout=120,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise TargetError(
                f"target {self.name}: reload command failed to run: {exc}", code="target-reload-failed"
            ) from exc
        if result.returncode != 0:
            first_line = (result.stderr or result.stdout).decode(errors="replace").strip().splitlines()[:1]
            detail = f": {first_line[0][:200]}" if first_line else ""
            raise TargetError(
                f"target {self.name}: reload command exited {result.returncode}{detail}",
                code="target-reload-failed",
                hint="run the reload command by hand to see its full output",
            )

    def read_back_files(self, name: str) -> tuple[str, ...] | None:
        """The file ``observe`` reads back (``run`` stats it before parsing it again); None with ``verify:``."""
        return None if self._verify else (os.path.join(self._dir, name, "fullchain.pem"),)

    def observe(self, name: str, domains: tuple[str, ...]) -> TargetObservation:
        if self._verify:
            return observe_served(self._verify, domains, self._sni)
        fullchain = self.folder(name) / "fullchain.pem"
        try:
            blocks = split_pem_chain(fullchain.read_text())
        except OSError as exc:
            return TargetObservation(fingerprint=None, error=f"{fullchain}: {exc.strerror}")
        if not blocks:
            return TargetObservation(fingerprint=None, error=f"{fullchain} holds no certificate")
        try:
            facts = read_cert_facts(blocks[0])
        except ValueError:
            return TargetObservation(fingerprint=None, error=f"{fullchain} holds an unreadable certificate")
        return TargetObservation(
            fingerprint=facts.fingerprint, serial_number=facts.serial_number, not_after=facts.not_after
        )

    def verify_timeout(self) -> timedelta:
        return self._verify_timeout
