"""The nginx target: PEM files, ``nginx -t``, rolled back on failure, then a graceful reload.

Per certificate, ``<cert_dir>/<name>/{fullchain,chain,cert,privkey}.pem`` (``privkey.pem`` 0600),
each written atomically, the key first, through no symbolic link (safe_files.py). Then the test
command runs (default ``nginx -t``; no shell). When it fails, the previous files are put back
(or the new folder removed), nginx is NOT reloaded, and the error quotes nginx's first error
line. When it passes, nginx is reloaded: SIGHUP to the master process of ``pid_file``, else
``reload_command``, else ``nginx -s reload``.

A reload returns before the new workers serve the new certificate: only the verification
handshake (``verify:``, retried by the executor) proves it. Without ``verify:`` the target is
observed by reading ``fullchain.pem`` back.

Deployments to one nginx are serialised, across threads and processes: ``flock`` on its
``pid_file`` (else on ``cert_dir``). Its configuration test loads EVERY certificate of the
configuration, so it must never run while another target of the same nginx (another
``cert_dir``, another server block) is half-way through writing its files: with 100 targets on
one nginx deployed in parallel, that race failed a third of the tests (key/certificate mismatch).
Deployments to one nginx that arrive together are committed together (:class:`GroupCommit`): all
their files, one ``nginx -t``, one reload; if that test fails, each is retried alone.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
from datetime import timedelta
from pathlib import Path

from certreconcile.desired.model import DEFAULT_VERIFY_TIMEOUT
from certreconcile.errors import TargetError
from certreconcile.plugins.paths import declared_path, optional_declared_path
from certreconcile.plugins.ports import DeployBundle, TargetObservation
from certreconcile.plugins.targets.handshake import observe_served
from certreconcile.plugins.targets.nginx_config import NginxTargetConfig
from certreconcile.plugins.targets.readback import observe_pem_file, pem_files
from certreconcile.plugins.targets.safe_files import FileSet
from certreconcile.plugins.targets.server_control import (
    GroupCommit,
    ServerActions,
    locked_instance,
    run_command,
    signal_pid_file,
)

__all__ = ["NginxTarget"]

_GROUP_COMMIT = GroupCommit()  # one per process: the deployments of every nginx target




class NginxTarget:
    def __init__(
        self,
        name: str,
        config: NginxTargetConfig,
        base_dir: Path,
        verify: str | None = None,
        verify_timeout: timedelta = DEFAULT_VERIFY_TIMEOUT,
        sni: str | None = None,
    ) -> None:
        self.name = name
        self._dir = declared_path(config.cert_dir, base_dir)
        self._pid_file = optional_declared_path(config.pid_file, base_dir)
        self._test_command = config.test_command or f"{shlex.quote(config.binary)} -t"
        self._reload_command = config.reload_command
        self._binary = config.binary
        self._base_dir = base_dir
        self._verify = verify
        self._verify_timeout = verify_timeout
        self._sni = sni

    def folder(self, certificate_name: str) -> Path:
        return self._dir / certificate_name

    def deploy(self, bundle: DeployBundle) -> None:
        folder = self.folder(bundle.name)
        files = {f"{bundle.name}/{file_name}": content for file_name, content in pem_files(bundle).items()}
        try:
            _GROUP_COMMIT.deploy(self._instance(), FileSet(self.name, self._dir, files), self._actions)
        except OSError as exc:
            raise TargetError(
                f"target {self.name}: cannot write into {folder}: {exc.strerror}",
                code="target-write-failed",
                hint="check that the directory exists and is writable by this user",
            ) from exc

    def _instance(self) -> tuple[str, ...]:
        """The nginx this target deploys to: targets with the same one share its test and reload."""
        where = self._pid_file if self._pid_file is not None else self._dir
        return (str(where), self._test_command, self._reload_command or "", self._binary)

    @property
    def _actions(self) -> ServerActions:
        return ServerActions(
            server="nginx",
            lock=lambda: locked_instance(self._pid_file, self._dir),
            check=lambda: self._run("configuration test", self._test_command, "target-config-test-failed"),
            reload=self._reload,
        )

    def _run(self, what: str, command: str, code: str) -> None:
        run_command(self.name, command, cwd=self._base_dir, what=what, code=code)

    def _reload(self) -> None:
        if self._pid_file is not None:
            signal_pid_file(self.name, self._pid_file, signal.SIGHUP, code="target-reload-failed")
        elif self._reload_command is not None:
            self._run("reload command", self._reload_command, "target-reload-failed")
        else:
            self._run("reload command", f"{shlex.quote(self._binary)} -s reload", "target-reload-failed")

    def check(self) -> str:
        """``certreconcile check``: the configuration test alone (no file written, no reload), under the
        lock deployments to this nginx take, so it never sees another deployment half-way."""
        lock = locked_instance(self._pid_file, self._dir) if self._dir.is_dir() else contextlib.nullcontext()
        with lock:  # (a missing cert_dir is not made by a check)
            self._run("configuration test", self._test_command, "target-config-test-failed")
        return f"`{self._test_command}` passed"

    def read_back_files(self, name: str) -> tuple[str, ...] | None:
        """The file ``observe`` reads back (``run`` stats it before parsing it again); None with ``verify:``."""
        return None if self._verify else (os.path.join(self._dir, name, "fullchain.pem"),)

    def observe(self, name: str, domains: tuple[str, ...]) -> TargetObservation:
        if self._verify:
            return observe_served(self._verify, domains, self._sni)
        return observe_pem_file(self.folder(name) / "fullchain.pem")

    def verify_timeout(self) -> timedelta:
        return self._verify_timeout
