"""One SSH connection of the ``ssh`` target: the pinned host key, the client credentials, the error codes.

The host key is checked against the declared ``known_hosts`` file only: never ``~/.ssh/known_hosts``,
never trust on first use, never added. No OpenSSH client configuration, default key file or agent is
consulted unless declared (``agent: true`` uses ``SSH_AUTH_SOCK``). Every failure is a one-line
:class:`TargetError` with a stable code; nothing secret (the key, its passphrase) reaches a message.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import asyncssh

from certreconcile.errors import TargetError
from certreconcile.plugins.paths import declared_path
from certreconcile.plugins.targets.ssh_config import SshTargetConfig

__all__ = ["connect"]


def _known_hosts(config: SshTargetConfig, base_dir: Path, target: str) -> asyncssh.SSHKnownHosts:
    path = declared_path(config.known_hosts, base_dir)
    try:
        return asyncssh.import_known_hosts(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not a known_hosts file"
        raise TargetError(
            f"target {target}: cannot read the known_hosts file {path}: {reason}",
            code="target-ssh-known-hosts-invalid",
            hint="write the host's key into it, e.g. `ssh-keyscan -p PORT HOST > FILE`, checked out of band",
        ) from None


def _client_key(config: SshTargetConfig, base_dir: Path, env: Mapping[str, str], target: str) -> asyncssh.SSHKey:
    assert config.key_file is not None
    path = declared_path(config.key_file, base_dir)
    hint = "give key_file a private key file of this user with mode 0600 (chmod 600 FILE)"
    try:
        with path.open("rb") as handle:
            mode = os.fstat(handle.fileno()).st_mode
            if not stat.S_ISREG(mode) or mode & 0o077:
                raise TargetError(
                    f"target {target}: the key file {path} is readable by others (mode {mode & 0o777:o})",
                    code="target-ssh-key-unusable",
                    hint=hint,
                )
            data = handle.read()
    except OSError as exc:
        raise TargetError(
            f"target {target}: cannot read the key file {path}: {exc.strerror}",
            code="target-ssh-key-unusable",
            hint=hint,
        ) from None
    passphrase: str | None = None
    if config.key_passphrase_env is not None:
        passphrase = env.get(config.key_passphrase_env) or None
        if passphrase is None:
            raise TargetError(
                f"target {target}: the variable {config.key_passphrase_env} (key_passphrase_env) is not set",
                code="target-secret-missing",
                hint=f"export {config.key_passphrase_env} with the passphrase of {path}",
            )
    try:
        return asyncssh.import_private_key(data, passphrase)
    except (asyncssh.KeyImportError, ValueError) as exc:  # KeyEncryptionError is a ValueError
        raise TargetError(
            f"target {target}: cannot load the key file {path}: {_first_line(exc)}",
            code="target-ssh-key-unusable",
            hint="check key_file and key_passphrase_env (an encrypted OpenSSH key needs the bcrypt package)",
        ) from None


async def _agent_keys(env: Mapping[str, str], stack: contextlib.AsyncExitStack, target: str) -> list[Any]:
    socket_path = env.get("SSH_AUTH_SOCK")
    hint = "start ssh-agent, add the key (ssh-add) and export SSH_AUTH_SOCK, or use key_file"
    if not socket_path:
        raise TargetError(
            f"target {target}: agent: true but SSH_AUTH_SOCK is not set", code="target-ssh-key-unusable", hint=hint
        )
    try:
        agent = await stack.enter_async_context(await asyncssh.connect_agent(socket_path))
        keys = list(await agent.get_keys())
    except (OSError, asyncssh.Error, ValueError) as exc:
        raise TargetError(
            f"target {target}: cannot use the ssh-agent at {socket_path}: {_first_line(exc)}",
            code="target-ssh-key-unusable",
            hint=hint,
        ) from None
    if not keys:
        raise TargetError(f"target {target}: the ssh-agent holds no key", code="target-ssh-key-unusable", hint=hint)
    return keys


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "reason", "") or getattr(exc, "strerror", "") or exc)
    return (text.splitlines() or [type(exc).__name__])[0][:200]


def _host_key_error(config: SshTargetConfig, known: asyncssh.SSHKnownHosts, target: str) -> TargetError:
    where = f"{config.host}:{config.port}"
    host_keys, ca_keys, *_ = known.match(config.host, "", config.port)
    if host_keys or ca_keys:
        return TargetError(
            f"target {target}: the host key of {where} is not the one pinned in {config.known_hosts}: refused",
            code="target-ssh-host-key-changed",
            hint="the host was reinstalled or someone is in between: check its key out of band, then "
            "replace its line in known_hosts",
        )
    return TargetError(
        f"target {target}: {config.known_hosts} holds no key for {where} (no trust on first use)",
        code="target-ssh-host-unknown",
        hint=f"add the host's key, checked out of band: `ssh-keyscan -p {config.port} {config.host}` "
        "(an entry for another port is written [host]:port)",
    )


@contextlib.asynccontextmanager
async def connect(
    config: SshTargetConfig, *, base_dir: Path, env: Mapping[str, str], target: str
) -> AsyncIterator[asyncssh.SSHClientConnection]:
    """An authenticated connection to the declared host, its key checked against ``known_hosts``."""
    known = _known_hosts(config, base_dir, target)
    async with contextlib.AsyncExitStack() as stack:
        keys: list[Any] = (
            await _agent_keys(env, stack, target) if config.agent else [_client_key(config, base_dir, env, target)]
        )
        where = f"{config.host}:{config.port}"
        seconds = config.timeout.delta.total_seconds()
        try:
            connection = await asyncssh.connect(
                config.host,
                config.port,
                username=config.user,
                known_hosts=known,
                client_keys=keys,
                agent_path=None,
                config=[],
                password_auth=False,
                kbdint_auth=False,
                gss_host=None,
                connect_timeout=seconds,
                login_timeout=seconds,
            )
        except asyncssh.HostKeyNotVerifiable:
            raise _host_key_error(config, known, target) from None
        except asyncssh.PermissionDenied:
            raise TargetError(
                f"target {target}: {where} refused the login of {config.user!r} with this key",
                code="target-ssh-auth-failed",
                hint="add the public key to the user's authorized_keys on the host, or check user",
            ) from None
        except OSError as exc:  # refused, unreachable, timed out (TimeoutError is an OSError)
            raise TargetError(
                f"target {target}: cannot connect to {where}: {exc.strerror or 'timed out'}",
                code="target-unreachable",
                hint="check that sshd runs there and the port is open; retry later",
            ) from None
        except asyncssh.Error as exc:
            raise TargetError(
                f"target {target}: SSH with {where} failed: {exc.reason}",
                code="target-ssh-failed",
                hint="see the host's sshd log",
            ) from None
        async with connection:
            yield connection
