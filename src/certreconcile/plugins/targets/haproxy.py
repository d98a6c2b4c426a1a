"""The HAProxy target: ``<cert_dir>/<name>.pem`` and the ``<name>/`` folder, then the runtime API or a reload.

Files, each written atomically (private files first):

* ``<cert_dir>/<name>.pem``: certificate, chain and key in one file, 0600: what a bind line loads
  (``bind :443 ssl crt <cert_dir>/<name>.pem``, or ``crt <cert_dir>`` for the whole directory;
  HAProxy skips the sub-folders);
* ``<cert_dir>/<name>/{fullchain,chain,cert,privkey}.pem`` like every file-writing target.

Both through directory descriptors (safe_files.py): no symbolic link below ``cert_dir`` is followed.

With ``runtime_api`` the certificate HAProxy holds under that crt path is replaced in memory,
without a reload: ``set ssl cert <path> <<`` (the payload) then ``commit ssl cert <path>``. The
crt path is the key: HAProxy only knows the certificates its configuration loaded. When it
answers that it never loaded this path (a new certificate name), the target falls back to a
reload if one is configured (``reload_command``, else SIGUSR2 to the master process of
``pid_file``: master-worker mode, ``-W``), and the deployment waits (up to the verify timeout)
until ``show ssl cert <path>`` shows the new certificate, sending SIGUSR2 again every 2 s (a
master still starting drops it); otherwise the deployment fails with a hint about the bind line.
When HAProxy rejects the payload (e.g. a key that does not match), the transaction is
aborted and the previous files are put back. Without ``runtime_api``: files, then the reload.

``observe``: with ``verify:`` a TLS handshake; else the crt file read back, and with
``runtime_api`` also ``show ssl cert <path>``, whose SHA-1 must match the file's leaf (otherwise
HAProxy serves something else than the file: no fingerprint, an error).
"""

from __future__ import annotations

import contextlib
import hashlib
import signal
import socket
import time
from datetime import timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from certreconcile.desired.model import DEFAULT_VERIFY_TIMEOUT
from certreconcile.domain.certs import split_pem_chain
from certreconcile.errors import TargetError
from certreconcile.plugins.paths import declared_path, optional_declared_path
from certreconcile.plugins.ports import DeployBundle, TargetObservation
from certreconcile.plugins.targets.handshake import observe_served, parse_host_port
from certreconcile.plugins.targets.haproxy_config import HaproxyTargetConfig
from certreconcile.plugins.targets.readback import observe_pem_file, pem_files
from certreconcile.plugins.targets.safe_files import FileContent, FileSet, PemFolderSnapshot, write_file_set
from certreconcile.plugins.targets.server_control import (
    first_diagnostic,
    locked_directory,
    run_command,
    signal_pid_file,
)

__all__ = ["HaproxyRuntimeApi", "HaproxyTarget"]

_NOT_LOADED = "not referenced by the configuration"
# HAProxy's master drops a SIGUSR2 that arrives while it is still starting (seen with 2.6: a
# signal sent within ~50 ms of "Loading success." is lost without a trace), so a reload done to
# load a new certificate is confirmed through the runtime API and signalled again if needed.
_RESIGNAL_EVERY = 2.0
_POLL_EVERY = 0.05


class HaproxyRuntimeApi:
    """HAProxy's CLI (the ``stats socket``), one command per connection (non-interactive mode)."""

    def __init__(self, address: str, timeout: float = 10.0) -> None:
        self.address = address
        self._timeout = timeout

    def _connect(self) -> socket.socket:
        if self.address.startswith("unix:"):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self._timeout)
            try:
                sock.connect(self.address.removeprefix("unix:"))
            except OSError:
                sock.close()
                raise
            return sock
        host, port = parse_host_port(self.address)
        return socket.create_connection((host, port), timeout=self._timeout)

    def command(self, line: str, payload: str | None = None) -> str:
        """Send one command (with an optional ``<<`` payload, ended by an empty line); return the answer.

        A line holding a line break, ``;`` or ``\\`` is refused unsent: HAProxy would read a second
        command, or another argument, from a path that holds one.
        """
        if any(character in line for character in "\r\n;\\"):
            raise TargetError(
                f"refusing to send {line[:200]!r} to the HAProxy runtime API: a path in it holds a separator",
                code="target-runtime-api-unsafe",
                hint="use a cert_dir path without spaces, ';', '\\' or line breaks",
            )
        if payload is None:
            text = line + "\n"
        else:  # an empty line inside the payload would end it early: drop them (PEM ignores them)
            body = "\n".join(part for part in payload.splitlines() if part.strip())
            text = f"{line} <<\n{body}\n\n"
        with self._connect() as sock:
            sock.sendall(text.encode())
            chunks: list[bytes] = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace").strip()


class HaproxyTarget:
    def __init__(
        self,
        name: str,
        config: HaproxyTargetConfig,
        base_dir: Path,
        verify: str | None = None,
        verify_timeout: timedelta = DEFAULT_VERIFY_TIMEOUT,
        sni: str | None = None,
    ) -> None:
        self.name = name
        self._dir = declared_path(config.cert_dir, base_dir)
        self._api = HaproxyRuntimeApi(config.runtime_api) if config.runtime_api else None
        self._pid_file = optional_declared_path(config.pid_file, base_dir)
        self._reload_command = config.reload_command
        self._test_command = config.test_command
        self._base_dir = base_dir
        self._verify = verify
        self._verify_timeout = verify_timeout
        self._sni = sni

    def crt_path(self, certificate_name: str) -> Path:
        """The combined PEM file, the path HAProxy knows the certificate by."""
        return self._dir / f"{certificate_name}.pem"

    def folder(self, certificate_name: str) -> Path:
        return self._dir / certificate_name

    def check(self) -> str:
        """``certreconcile check``: the configuration check alone (nothing written, nothing loaded)."""
        if not self._test_command:
            return "no test_command declared: nothing to run"
        with locked_directory(self._dir) if self._dir.is_dir() else contextlib.nullcontext():
            run_command(self.name, self._test_command, cwd=self._base_dir, what="configuration check",
                        code="target-config-test-failed")  # fmt: skip
        return f"`{self._test_command}` passed"

    def _can_reload(self) -> bool:
        return self._pid_file is not None or self._reload_command is not None

    def deploy(self, bundle: DeployBundle) -> None:
        crt = self.crt_path(bundle.name)
        combined = bundle.fullchain_pem.rstrip("\n") + "\n" + bundle.key_pem.reveal().decode()
        files = {f"{bundle.name}/{file_name}": content for file_name, content in pem_files(bundle).items()}
        files[crt.name] = FileContent(combined.encode(), 0o600)
        file_set = FileSet(self.name, self._dir, files)
        try:
            with locked_directory(self._dir):  # also serialises the writers of <name>.pem
                snapshot = PemFolderSnapshot.take(file_set)  # refuses a <name> that is a link, before any write
                write_file_set(file_set)
                if self._test_command:
                    try:
                        run_command(
                            self.name,
                            self._test_command,
                            cwd=self._base_dir,
                            what="configuration check",
                            code="target-config-test-failed",
                        )
                    except TargetError as exc:
                        snapshot.restore()
                        raise TargetError(
                            f"{exc.message} ({snapshot.describe_restore()}, HAProxy not updated)",
                            code=exc.code,
                            hint=exc.hint,
                        ) from None
                if self._api is not None:
                    if self._update_in_memory(crt, combined, snapshot):
                        return
                    if not self._can_reload():
                        raise TargetError(
                            f"target {self.name}: HAProxy has not loaded {crt} (files written, not served yet)",
                            code="target-cert-not-loaded",
                            hint=f"load it in a bind line (`crt {crt}` or `crt {self._dir}`) and reload HAProxy, "
                            "or set reload_command or pid_file",
                        )
                if self._can_reload():
                    self._reload()
                    if self._api is not None:
                        self._await_loaded(crt)
        except OSError as exc:
            raise TargetError(
                f"target {self.name}: cannot write into {self._dir}: {exc.strerror}",
                code="target-write-failed",
                hint="check that the directory exists and is writable by this user",
            ) from exc

    def _ask(self, line: str, payload: str | None = None) -> str:
        assert self._api is not None
        try:
            return self._api.command(line, payload)
        except OSError as exc:
            raise TargetError(
                f"target {self.name}: HAProxy's runtime API at {self._api.address} did not answer: {exc}",
                code="target-runtime-api-failed",
                hint="is HAProxy running with `stats socket ... level admin` at runtime_api?",
            ) from exc

    def _update_in_memory(self, crt: Path, combined: str, snapshot: PemFolderSnapshot) -> bool:
        """Replace the certificate HAProxy holds under ``crt``; False when HAProxy never loaded that path."""
        if any(character.isspace() for character in str(crt)):  # one CLI argument: no spaces
            raise TargetError(
                f"target {self.name}: the crt path {str(crt)!r} holds a space, which the HAProxy runtime API "
                "would read as the end of the path",
                code="target-runtime-api-unsafe",
                hint="use a cert_dir path without spaces (a relative one is resolved from the desired-state directory)",
            )
        self._ask(f"abort ssl cert {crt}")  # a transaction left over by an interrupted run of ours
        answer = self._ask(f"set ssl cert {crt}", combined)
        if _NOT_LOADED in answer:
            return False
        if "Transaction created" not in answer and "Transaction updated" not in answer:
            self._reject(crt, "set ssl cert", answer, snapshot)
        answer = self._ask(f"commit ssl cert {crt}")
        if "Success!" not in answer:
            self._reject(crt, "commit ssl cert", answer, snapshot)
        return True

    def _reject(self, crt: Path, step: str, answer: str, snapshot: PemFolderSnapshot) -> None:
        self._ask(f"abort ssl cert {crt}")
        snapshot.restore()
        raise TargetError(
            f"target {self.name}: HAProxy refused `{step} {crt}`: {first_diagnostic(answer.encode()) or 'no answer'} "
            f"({snapshot.describe_restore()})",
            code="target-runtime-api-refused",
            hint="check that the certificate, its chain and its key belong together",
        )

    def _reload(self) -> None:
        if self._reload_command is not None:
            run_command(
                self.name, self._reload_command, cwd=self._base_dir, what="reload command", code="target-reload-failed"
            )
        else:
            assert self._pid_file is not None
            signal_pid_file(self.name, self._pid_file, signal.SIGUSR2, code="target-reload-failed")

    def _holds(self, crt: Path) -> bool:
        """Whether HAProxy (its current worker) holds the certificate now in ``crt``."""
        assert self._api is not None
        try:
            answer = self._api.command(f"show ssl cert {crt}")
        except OSError:  # the socket changes hands during a reload
            return False
        held = _sha1_line(answer)
        return held is not None and held == _leaf_sha1(crt)

    def _await_loaded(self, crt: Path) -> None:
        """Wait until the reloaded HAProxy holds ``crt``; a lost SIGUSR2 is sent again every 2 s."""
        timeout = self._verify_timeout.total_seconds()
        started = time.monotonic()
        signalled = started
        while not self._holds(crt):
            now = time.monotonic()
            if now - started >= timeout:
                raise TargetError(
                    f"target {self.name}: HAProxy did not load {crt} within {timeout:g} s of the reload",
                    code="target-reload-failed",
                    hint=f"check HAProxy's log, and that a bind line loads it (`crt {crt}` or `crt {self._dir}`)",
                )
            if self._reload_command is None and now - signalled >= _RESIGNAL_EVERY:
                self._reload()
                signalled = now
            time.sleep(_POLL_EVERY)

    def observe(self, name: str, domains: tuple[str, ...]) -> TargetObservation:
        if self._verify:
            return observe_served(self._verify, domains, self._sni)
        crt = self.crt_path(name)
        on_disk = observe_pem_file(crt)
        if self._api is None or on_disk.fingerprint is None:
            return on_disk
        try:
            answer = self._api.command(f"show ssl cert {crt}")
        except OSError as exc:
            return TargetObservation(fingerprint=None, error=f"HAProxy's runtime API did not answer: {exc}")
        held = _sha1_line(answer)
        if held is None:
            return TargetObservation(fingerprint=None, error=f"HAProxy holds no certificate for {crt}")
        if held != _leaf_sha1(crt):
            return TargetObservation(fingerprint=None, error=f"HAProxy holds another certificate than {crt}")
        return on_disk

    def verify_timeout(self) -> timedelta:
        return self._verify_timeout


def _sha1_line(answer: str) -> str | None:
    for line in answer.splitlines():
        label, _, value = line.partition(":")
        if label.strip() == "SHA1 FingerPrint":
            return value.strip().upper()
    return None


def _leaf_sha1(crt: Path) -> str | None:
    try:
        blocks = split_pem_chain(crt.read_text())
        if not blocks:
            return None
        der = x509.load_pem_x509_certificate(blocks[0].encode()).public_bytes(Encoding.DER)
    except (OSError, ValueError):
        return None
    return hashlib.sha1(der, usedforsecurity=False).hexdigest().upper()
