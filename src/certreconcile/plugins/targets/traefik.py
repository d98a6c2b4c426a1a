"""The traefik target: a dynamic configuration file per certificate for Traefik's file provider.

::

    <dynamic_dir>/certreconcile-<name>.yaml      tls.certificates: [{certFile, keyFile}]
    <dynamic_dir>/<name>/..<fingerprint>.<random>/{fullchain,chain,cert,privkey}.pem   (key 0600)
    <dynamic_dir>/<name>/..data, fullchain.pem, ... -> the current version (see versioned.py)

The YAML names the files of one version directory, never modified once written, so Traefik
reads a matching certificate and key whenever it reloads. Order of a deployment: remove the
versions older than the current one, write the new version directory, then the YAML (atomic
rename: the file provider with ``watch: true`` reloads). So the previous version (and its key,
0600) stays until the next rotation: Traefik's file provider reads the directory tree
recursively after each change, and a directory removed while it reads fails that reload. The
PEM folders hold no ``.yaml``/``.toml``, so that recursive read finds nothing else in them.
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
from certreconcile.plugins.targets.handshake import observe_served
from certreconcile.plugins.targets.readback import observe_pem_file, pem_files
from certreconcile.plugins.targets.traefik_config import TraefikTargetConfig
from certreconcile.plugins.targets.versioned import FileContent, VersionedFolder

__all__ = ["TraefikTarget", "dynamic_document"]


def dynamic_document(version: Path) -> dict[str, Any]:
    """Traefik's dynamic configuration naming the PEM files of ``version`` (an absolute directory)."""
    return {
        "tls": {
            "certificates": [
                {"certFile": str(version / "fullchain.pem"), "keyFile": str(version / "privkey.pem")},
            ]
        }
    }


class TraefikTarget:
    def __init__(
        self,
        name: str,
        config: TraefikTargetConfig,
        base_dir: Path,
        verify: str | None = None,
        verify_timeout: timedelta = DEFAULT_VERIFY_TIMEOUT,
        sni: str | None = None,
    ) -> None:
        self.name = name
        self._dir = declared_path(config.dynamic_dir, base_dir)
        self._verify = verify
        self._verify_timeout = verify_timeout
        self._sni = sni

    def folder(self, certificate_name: str) -> Path:
        return self._dir / certificate_name

    def config_file(self, certificate_name: str) -> Path:
        return self._dir / f"certreconcile-{certificate_name}.yaml"

    def deploy(self, bundle: DeployBundle) -> None:
        folder = VersionedFolder(self._dir, bundle.name, self.name)
        config_name = self.config_file(bundle.name).name
        files = pem_files(bundle)
        try:
            with folder.locked() as versions:  # also serialises the writers of the YAML
                version = versions.current()
                if version is None or not versions.holds(files):
                    # Before the swap, never after it: Traefik reads the whole directory tree
                    # when the YAML changes, and a version vanishing mid-read fails that reload.
                    versions.remove_old_versions()
                    version = versions.publish(files, label=bundle.fingerprint[:16])
                document = FileContent(
                    yaml.safe_dump(dynamic_document(folder.folder / version), sort_keys=False).encode(), 0o644
                )
                written = versions.root.read_regular(config_name)
                if written is None or written.data != document.data:
                    versions.root.write_files({config_name: document})  # Traefik reloads on this rename
        except OSError as exc:
            raise TargetError(
                f"target {self.name}: cannot write into {self._dir}: {exc.strerror}",
                code="target-write-failed",
                hint="check that the directory exists and is writable by this user",
            ) from exc

    def observe(self, name: str, domains: tuple[str, ...]) -> TargetObservation:
        if self._verify:
            return observe_served(self._verify, domains, self._sni)
        config_file = self.config_file(name)
        try:
            document = yaml.safe_load(config_file.read_text())
        except OSError as exc:
            return TargetObservation(fingerprint=None, error=f"{config_file}: {exc.strerror}")
        except yaml.YAMLError:
            return TargetObservation(fingerprint=None, error=f"{config_file} is not valid YAML")
        try:
            entry = document["tls"]["certificates"][0]
            cert_file, key_file = Path(entry["certFile"]), Path(entry["keyFile"])
        except (TypeError, KeyError, IndexError):
            return TargetObservation(fingerprint=None, error=f"{config_file} lists no certificate")
        if not key_file.is_file():
            return TargetObservation(fingerprint=None, error=f"{key_file} (keyFile of {config_file}) is missing")
        return observe_pem_file(cert_file)

    def verify_timeout(self) -> timedelta:
        return self._verify_timeout
