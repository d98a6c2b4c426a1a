"""The ``haproxy`` target kind: its configuration and its factory.

The adapter: :mod:`certreconcile.plugins.targets.haproxy`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated

from pydantic import ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from certreconcile.desired.fields import (
    Checked,
    Command,
    FsPath,
    TargetDir,
    Wire,
)
from certreconcile.plugins.targets.verification import verification

if TYPE_CHECKING:
    from collections.abc import Iterator

    from certreconcile.desired.checks import Finding
    from certreconcile.desired.model import TargetSpec
    from certreconcile.plugins.ports import Target
    from certreconcile.plugins.registry import PluginContext


__all__ = ["SUMMARY", "Config", "create"]

SUMMARY = 'HAProxy: PEM files, then its runtime API (no reload) or a reload.'

#: What the runtime API reads as a separator inside ``set ssl cert <path>``.
_RUNTIME_API_UNSAFE = re.compile("[\\s;#'\"\\\\\x00-\x1f\x7f]")

class HaproxyTargetConfig(Wire):
    """HAProxy: ``<cert_dir>/<name>.pem`` (certificate, chain and key, 0600) plus the ``<name>/`` folder.

    With ``runtime_api`` the certificate is replaced in memory (``set ssl cert`` + ``commit ssl cert``),
    without a reload; that needs a bind line loading ``crt <cert_dir>/<name>.pem`` (or ``crt <cert_dir>``)
    and a ``stats socket ... level admin``. A certificate HAProxy has not loaded yet, or no
    runtime_api: the files are written, then HAProxy is reloaded (``reload_command``, else SIGUSR2
    to the master process of ``pid_file``: master-worker mode, ``-W``).
    """

    model_config = ConfigDict(json_schema_extra={"not": {"required": ["pid_file", "reload_command"]}})

    cert_dir: TargetDir = Field(min_length=1)
    """Output directory; a relative path is relative to the desired-state directory."""
    runtime_api: Annotated[str, Checked.HOST_PORT] | None = Field(
        default=None, pattern=r"^(?:unix:/\S+|(?:\[[0-9A-Fa-f:.]+\]|[^\s:\[\]/]+):[0-9]{1,5})$"
    )
    """HAProxy's admin socket: ``unix:/run/haproxy/admin.sock`` or ``127.0.0.1:9999`` (level admin)."""
    reload_command: Command | None = None
    """Reload command (no shell), e.g. ``systemctl reload haproxy``; instead of pid_file."""
    pid_file: FsPath | None = None
    """The master's pid file (``-p``, master-worker mode): reload by SIGUSR2 to that process."""
    test_command: Command | None = None
    """Configuration check run after writing (no shell), e.g. ``haproxy -c -f /etc/haproxy/haproxy.cfg``;
    on failure the previous files are put back. null: none."""

    @model_validator(mode="after")
    def _one_reload(self) -> HaproxyTargetConfig:
        if self.pid_file is not None and self.reload_command is not None:
            raise PydanticCustomError("haproxy_reload", "pid_file and reload_command exclude each other: choose one")
        return self

    def kind_findings(self, path: tuple[str | int, ...]) -> Iterator[Finding]:
        """The path goes into ``set ssl cert <path>`` on the runtime API: no separators in it."""
        from certreconcile.desired.checks import Finding, format_path

        if self.runtime_api and _RUNTIME_API_UNSAFE.search(self.cert_dir):
            yield Finding(
                (*path, "cert_dir"),
                "haproxy-cert-dir-unsafe",
                f"{format_path((*path, 'cert_dir'))}: {self.cert_dir!r} holds a space, quote, ';', '#' or '\\', "
                "which the HAProxy runtime API would read as a separator: the path goes into `set ssl cert <path>`",
                "use a directory path without spaces or those characters",
            )


Config = HaproxyTargetConfig


def create(spec: TargetSpec, context: PluginContext) -> Target:
    """No I/O here: HAProxy's runtime API is first asked at the first deployment or read-back."""
    from certreconcile.plugins.targets.haproxy import HaproxyTarget

    assert isinstance(spec.config, HaproxyTargetConfig)
    return HaproxyTarget(spec.name, spec.config, context.desired_dir, **verification(spec))
