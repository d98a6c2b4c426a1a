"""The envoy target: file-based SDS, one folder per certificate, swapped atomically.

::

    <sds_dir>/<name>/
      ..data -> ..<fingerprint>.<random>     the current version (see versioned.py)
      ..<fingerprint>.<random>/{sds.yaml, fullchain.pem, chain.pem, cert.pem, privkey.pem (0600)}
      sds.yaml, fullchain.pem, ... -> ..data/...

``sds.yaml`` holds one ``Secret`` named ``<name>`` whose ``tls_certificate`` points at
``<sds_dir>/<name>/fullchain.pem`` and ``privkey.pem`` with ``watched_directory: <sds_dir>/<name>``:
Envoy re-reads the pair, checked for consistency, whenever ``..data`` is renamed. The listener
refers to it with ``sds_config.path_config_source`` (``path: <sds_dir>/<name>/sds.yaml``,
``watched_directory: <sds_dir>/<name>``); see the README. Envoy needs no reload command.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml

from certreconcile.desired.model import DEFAULT_VERIFY_TIMEOUT
from certreconcile.errors import TargetError
from certreconcile.plugins.paths import declared_path
from certreconcile.plugins.ports import DeployBundle, TargetObservation
from certreconcile.plugins.targets.envoy_config import EnvoyTargetConfig
from certreconcile.plugins.targets.handshake import observe_served
from certreconcile.plugins.targets.readback import observe_pem_file, pem_files
from certreconcile.plugins.targets.versioned import DATA_LINK, FileContent, VersionedFolder

__all__ = ["SDS_FILE", "SDS_RESOURCE_TYPE", "EnvoyTarget", "sds_document"]

SDS_FILE = "sds.yaml"
SDS_RESOURCE_TYPE = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"


def sds_document(name: str, folder: Path) -> dict[str, Any]:
    """The SDS resource file of certificate ``name`` whose folder is ``folder`` (absolute)."""
    return {
        "resources": [
            {
                "@type": SDS_RESOURCE_TYPE,
                "name": name,
                "tls_certificate": {
                    "certificate_chain": {"filename": str(folder / "fullchain.pem")},
                    "private_key": {"filename": str(folder / "privkey.pem")},
                    "watched_directory": {"path": str(folder)},
                },
            }
        ]
    }


class EnvoyTarget:
    def __init__(
        self,
        name: str,
        config: EnvoyTargetConfig,
        base_dir: Path,
        verify: str | None = None,
        verify_timeout: timedelta = DEFAULT_VERIFY_TIMEOUT,
        sni: str | None = None,
    ) -> None:
        self.name = name
        self._dir = declared_path(config.sds_dir, base_dir)
        self._verify = verify
        self._verify_timeout = verify_timeout
        self._sni = sni

    def folder(self, certificate_name: str) -> Path:
        return self._dir / certificate_name

    def deploy(self, bundle: DeployBundle) -> None:
        folder = VersionedFolder(self._dir, bundle.name, self.name)
        sds = yaml.safe_dump(sds_document(bundle.name, folder.folder), sort_keys=False).encode()
        files = {**pem_files(bundle), SDS_FILE: FileContent(sds, 0o644)}
        try:
            with folder.locked() as versions:
                if not versions.holds(files):
                    versions.publish(files, label=bundle.fingerprint[:16])
                versions.remove_old_versions()
        except OSError as exc:
            raise TargetError(
                f"target {self.name}: cannot write into {folder.folder}: {exc.strerror}",
                code="target-write-failed",
                hint="check that the directory exists and is writable by this user",
            ) from exc

    def observe(self, name: str, domains: tuple[str, ...]) -> TargetObservation:
        if self._verify:
            return observe_served(self._verify, domains, self._sni)
        folder = VersionedFolder(self._dir, name, self.name)
        current = folder.current()
        if current is None:
            return TargetObservation(fingerprint=None, error=f"{folder.folder / DATA_LINK} does not exist")
        problem = _sds_problem(name, folder.folder, current)
        if problem is not None:
            return TargetObservation(fingerprint=None, error=problem)
        # Through the version resolved once: the pair Envoy would read together.
        if not (current / "privkey.pem").is_file():
            return TargetObservation(fingerprint=None, error=f"{current / 'privkey.pem'} is missing")
        return observe_pem_file(current / "fullchain.pem")

    def verify_timeout(self) -> timedelta:
        return self._verify_timeout


def _sds_problem(name: str, folder: Path, current: Path) -> str | None:
    """Why the SDS file of the current version does not declare the secret ``name`` (None: it does)."""
    sds_path = current / SDS_FILE
    try:
        document = yaml.safe_load(sds_path.read_text())
    except OSError as exc:
        return f"{sds_path}: {exc.strerror}"
    except yaml.YAMLError:
        return f"{sds_path} is not valid YAML"
    if document != sds_document(name, folder):
        return f"{sds_path} does not declare the secret {name}"
    return None
