"""The ``ssh`` target kind: its configuration and its factory.

The adapter: :mod:`certreconcile.plugins.targets.ssh` (asyncssh, ``pip install 'certreconcile[ssh]'``).
"""

from __future__ import annotations

import posixpath
from typing import TYPE_CHECKING

from pydantic import Field, StrictBool, model_validator
from pydantic_core import PydanticCustomError

from certreconcile.desired.fields import (
    ENV_NAME_PATTERN,
    Command,
    Duration,
    FsPath,
    ParsedDuration,
    Wire,
)
from certreconcile.plugins.targets.verification import verification

if TYPE_CHECKING:
    from certreconcile.desired.model import TargetSpec
    from certreconcile.plugins.ports import Target
    from certreconcile.plugins.registry import PluginContext


__all__ = ["SUMMARY", "Config", "create"]

SUMMARY = "A host without an agent: PEM files over SFTP (pinned host key), then a remote reload command."


class SshTargetConfig(Wire):
    """Over SSH: ``<dir>/<name>/{fullchain,chain,cert,privkey}.pem`` on the remote host, then ``reload_command``.

    Each file is uploaded by SFTP to a temporary name in its folder (the key created 0600), synced
    and renamed over its name. The host key must be in ``known_hosts`` (no trust on first use).
    """

    host: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9._:-]+$")
    """The remote host: a DNS name or an IP address (IPv6 without brackets)."""
    port: int = Field(default=22, ge=1, le=65535)
    """The SSH port."""
    user: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")
    """The remote user (it needs write access to ``dir`` and the right to run ``reload_command``)."""
    known_hosts: FsPath = Field(min_length=1)
    """A known_hosts file (OpenSSH format) holding the host's key: the key is pinned, an unknown or
    changed key is refused. A relative path is relative to the desired-state directory."""
    key_file: FsPath | None = Field(default=None, min_length=1)
    """The client's private key file (mode 0600, never readable by others); or ``agent: true``."""
    key_passphrase_env: str | None = Field(default=None, pattern=ENV_NAME_PATTERN)
    """Name of the environment variable holding key_file's passphrase (never the passphrase)."""
    agent: StrictBool = False
    """Authenticate with the keys of the ssh-agent at ``SSH_AUTH_SOCK`` instead of key_file."""
    dir: FsPath = Field(min_length=2, pattern=r"^/")
    """The remote directory (absolute): one folder per certificate is written into it."""
    reload_command: Command | None = None
    """Run on the remote host after the files changed, e.g. ``sudo systemctl reload nginx``; its exit
    status is checked. Split into words like a shell would and each word quoted: no shell feature
    (variables, ``;``, ``&&``, globs) applies. null: none."""
    timeout: Duration = ParsedDuration("15s")
    """Timeout of the connection and login, and of the reload command."""

    @model_validator(mode="after")
    def _one_credential(self) -> SshTargetConfig:
        if (self.key_file is None) == (not self.agent):
            raise PydanticCustomError("ssh_credential", "give key_file or agent: true (one of the two)")
        if self.key_passphrase_env is not None and self.key_file is None:
            raise PydanticCustomError("ssh_passphrase", "key_passphrase_env goes with key_file")
        if posixpath.normpath(self.dir) in ("/", "//"):
            raise PydanticCustomError(
                "ssh_dir_root", "dir is the filesystem root; give the target a directory of its own"
            )
        return self


Config = SshTargetConfig


def create(spec: TargetSpec, context: PluginContext) -> Target:
    """No I/O here: the host is contacted at each deployment and observation."""
    try:
        from certreconcile.plugins.targets.ssh import SshTarget
    except ImportError as exc:
        if exc.name != "asyncssh":
            raise
        from certreconcile.errors import TargetError

        raise TargetError(
            f"target {spec.name}: the ssh target needs asyncssh, which is not installed",
            code="target-sdk-missing",
            hint="pip install 'certreconcile[ssh]'",
        ) from None

    assert isinstance(spec.config, SshTargetConfig)
    return SshTarget(
        spec.name,
        spec.config,
        base_dir=context.desired_dir,
        env=context.env,
        **verification(spec),
    )
