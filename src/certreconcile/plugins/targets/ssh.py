"""The ssh target: ``<dir>/<name>/{fullchain,chain,cert,privkey}.pem`` on a remote host over SFTP, then a reload.

For hosts without an agent (design §9). The connection (pinned host key, credentials) is
:mod:`certreconcile.plugins.targets.ssh_session`. A deployment:

* creates ``dir`` when missing (the configured directory is trusted, like a local target's); the
  per-name folder ``<dir>/<name>`` is looked at with ``lstat``: a symbolic link or a non-directory
  there is refused (``target-path-unsafe``) before anything is written, as safe_files.py does locally;
* removes the temporaries of ours a killed deployment left in that folder (``.certreconcile-tmp-``
  names only; ``remove`` deletes a link itself, never what it points to);
* writes each file to a new temporary name in the folder (exclusive create, its final mode given
  at creation and set again before the first byte: the key is 0600 from the start), syncs it
  (``fsync@openssh.com`` when the server has it) and renames it over its name
  (``posix-rename@openssh.com``: atomic, a link already there is replaced, never written through).
  The key is written first: a reader that sees the new certificate finds the new key;
* runs ``reload_command`` on the host: its words quoted one by one (no shell feature applies),
  exit status checked.

Verification: a TLS handshake to ``verify`` when declared, else ``fullchain.pem`` read back over SFTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import shlex
import stat
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import asyncssh

from certreconcile.desired.model import DEFAULT_VERIFY_TIMEOUT
from certreconcile.errors import TargetError
from certreconcile.plugins.ports import DeployBundle, TargetObservation
from certreconcile.plugins.targets.handshake import observe_served
from certreconcile.plugins.targets.readback import observe_pem_text, pem_files
from certreconcile.plugins.targets.safe_files import TEMP_PREFIX, UNSAFE_PATH, FileContent
from certreconcile.plugins.targets.ssh_config import SshTargetConfig
from certreconcile.plugins.targets.ssh_session import connect

__all__ = ["SshTarget", "remote_command"]

_OUR_TEMPORARY = re.compile(re.escape(TEMP_PREFIX) + r".+\.[0-9a-f]{16}$")
_WRITE_ORDER = ("privkey.pem", "cert.pem", "chain.pem", "fullchain.pem")
_READ_LIMIT = 1 << 20  # a fullchain.pem read back is far smaller


def remote_command(declared: str) -> str:
    """The declared command as the remote shell must run it: each word quoted, so nothing is expanded."""
    return shlex.join(shlex.split(declared))


class SshTarget:
    def __init__(
        self,
        name: str,
        config: SshTargetConfig,
        *,
        base_dir: Path,
        env: Mapping[str, str],
        verify: str | None = None,
        verify_timeout: timedelta = DEFAULT_VERIFY_TIMEOUT,
        sni: str | None = None,
    ) -> None:
        self.name = name
        self._config = config
        self._base_dir = base_dir
        self._env = env
        self._root = config.dir.rstrip("/")
        self._verify = verify
        self._verify_timeout = verify_timeout
        self._sni = sni

    @property
    def where(self) -> str:
        return f"{self._config.user}@{self._config.host}:{self._config.port}"

    def folder(self, certificate_name: str) -> str:
        return f"{self._root}/{certificate_name}"

    def deploy(self, bundle: DeployBundle) -> None:
        asyncio.run(self._deploy(bundle))

    def observe(self, name: str, domains: tuple[str, ...]) -> TargetObservation:
        if self._verify:
            return observe_served(self._verify, domains, self._sni)
        try:
            return asyncio.run(self._read_back(name))
        except TargetError as exc:
            return TargetObservation(fingerprint=None, error=exc.one_line())

    def verify_timeout(self) -> timedelta:
        return self._verify_timeout

    def _connect(self) -> contextlib.AbstractAsyncContextManager[asyncssh.SSHClientConnection]:
        return connect(self._config, base_dir=self._base_dir, env=self._env, target=self.name)

    async def _deploy(self, bundle: DeployBundle) -> None:
        files = pem_files(bundle)
        async with self._connect() as connection:
            try:
                async with connection.start_sftp_client() as sftp:
                    folder = await self._prepare_folder(sftp, bundle.name)
                    for file_name in _WRITE_ORDER:
                        await self._put(sftp, folder, file_name, files[file_name])
            except asyncssh.SFTPError as exc:
                raise TargetError(
                    f"target {self.name}: cannot write into {self.where}:{self.folder(bundle.name)}: {exc.reason}",
                    code="target-write-failed",
                    hint="check that the directory exists and is writable by the remote user",
                ) from None
            except (asyncssh.Error, OSError) as exc:
                raise TargetError(
                    f"target {self.name}: SFTP with {self.where} failed: {_reason(exc)}",
                    code="target-ssh-failed",
                    hint="the host's sshd needs the sftp subsystem; see its log",
                ) from None
            if self._config.reload_command:
                await self._reload(connection, self._config.reload_command)

    async def _prepare_folder(self, sftp: asyncssh.SFTPClient, name: str) -> str:
        """``<dir>/<name>``, a real directory (created when missing), emptied of our stale temporaries."""
        await sftp.makedirs(self._root, exist_ok=True)
        folder = self.folder(name)
        try:
            attrs = await sftp.lstat(folder)
        except asyncssh.SFTPNoSuchFile:
            with contextlib.suppress(asyncssh.SFTPFailure):  # made meanwhile: lstat decides
                await sftp.mkdir(folder, asyncssh.SFTPAttrs(permissions=0o755))
            attrs = await sftp.lstat(folder)
        mode = attrs.permissions or 0
        if stat.S_ISLNK(mode) or not stat.S_ISDIR(mode):
            what = "a symbolic link" if stat.S_ISLNK(mode) else "not a directory"
            raise TargetError(
                f"target {self.name}: {self.where}:{folder} is {what}; refusing to write through it",
                code=UNSAFE_PATH,
                hint="remove it on the host (the target creates the folder), and check who can write into dir",
            )
        for entry in await sftp.readdir(folder):
            name_of = entry.filename if isinstance(entry.filename, str) else entry.filename.decode(errors="replace")
            if _OUR_TEMPORARY.match(name_of):
                with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                    await sftp.remove(f"{folder}/{name_of}")
        return folder

    async def _put(self, sftp: asyncssh.SFTPClient, folder: str, final: str, content: FileContent) -> None:
        temporary = f"{folder}/{TEMP_PREFIX}{final}.{secrets.token_hex(8)}"
        handle = await sftp.open(temporary, "xb", asyncssh.SFTPAttrs(permissions=content.mode))
        try:
            try:
                await handle.chmod(content.mode)  # the server's umask may have narrowed it: before the first byte
                await handle.write(content.data)
                with contextlib.suppress(asyncssh.SFTPOpUnsupported):
                    await handle.fsync()
            finally:
                await handle.close()
            await _rename_over(sftp, temporary, f"{folder}/{final}")
        except BaseException:
            with contextlib.suppress(asyncssh.Error, OSError):
                await sftp.remove(temporary)
            raise

    async def _reload(self, connection: asyncssh.SSHClientConnection, declared: str) -> None:
        seconds = self._config.timeout.delta.total_seconds()
        try:
            result = await connection.run(remote_command(declared), check=False, timeout=seconds)
        except (asyncssh.Error, OSError) as exc:
            raise TargetError(
                f"target {self.name}: the reload command on {self.where} failed to run: {_reason(exc)}",
                code="target-reload-failed",
                hint="run the reload command on the host by hand to see its full output",
            ) from None
        if result.exit_status != 0:
            output = result.stderr or result.stdout or ""
            text = output if isinstance(output, str) else output.decode(errors="replace")
            first_line = text.strip().splitlines()[:1]
            detail = f": {first_line[0][:200]}" if first_line else ""
            status = f"exited {result.exit_status}" if result.exit_status is not None else "was killed"
            raise TargetError(
                f"target {self.name}: the reload command on {self.where} {status}{detail}",
                code="target-reload-failed",
                hint="run the reload command on the host by hand to see its full output",
            )

    async def _read_back(self, name: str) -> TargetObservation:
        path = f"{self.folder(name)}/fullchain.pem"
        async with self._connect() as connection:
            try:
                async with connection.start_sftp_client() as sftp:
                    handle = await sftp.open(path, "rb")
                    try:
                        data = await handle.read(_READ_LIMIT)
                    finally:
                        await handle.close()
            except (asyncssh.Error, OSError) as exc:
                return TargetObservation(fingerprint=None, error=f"{self.where}:{path}: {_reason(exc)}")
        text = data if isinstance(data, str) else data.decode(errors="replace")
        return observe_pem_text(text, f"{self.where}:{path}")


async def _rename_over(sftp: asyncssh.SFTPClient, temporary: str, final: str) -> None:
    """Atomic replace (POSIX rename); a server without the extension: remove, then rename."""
    try:
        await sftp.posix_rename(temporary, final)
    except asyncssh.SFTPOpUnsupported:
        with contextlib.suppress(asyncssh.SFTPNoSuchFile):
            await sftp.remove(final)
        await sftp.rename(temporary, final)


def _reason(exc: BaseException) -> str:
    reason = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or type(exc).__name__
    return str(reason).splitlines()[0][:200] if str(reason) else type(exc).__name__
