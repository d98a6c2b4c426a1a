"""The ``nginx`` target kind: its configuration and its factory.

The adapter: :mod:`certreconcile.plugins.targets.nginx`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from certreconcile.desired.fields import (
    Command,
    FsPath,
    TargetDir,
    Wire,
)
from certreconcile.plugins.targets.verification import verification

if TYPE_CHECKING:
    from certreconcile.desired.model import TargetSpec
    from certreconcile.plugins.ports import Target
    from certreconcile.plugins.registry import PluginContext


__all__ = ["SUMMARY", "Config", "create"]

SUMMARY = 'nginx: PEM files, ``nginx -t`` (rolled back on failure), then a graceful reload.'

class NginxTargetConfig(Wire):
    """nginx: ``<cert_dir>/<name>/{fullchain,chain,cert,privkey}.pem``, checked by ``nginx -t``, then a reload.

    When the test command fails, the previous files are put back (or the new folder removed) and
    nginx is not reloaded. The reload is SIGHUP to the master process named by ``pid_file``, else
    ``reload_command``, else ``<binary> -s reload``. Point ``ssl_certificate`` at
    ``<cert_dir>/<name>/fullchain.pem`` and ``ssl_certificate_key`` at ``<cert_dir>/<name>/privkey.pem``.
    """

    model_config = ConfigDict(json_schema_extra={"not": {"required": ["pid_file", "reload_command"]}})

    cert_dir: TargetDir = Field(min_length=1)
    """Output directory; a relative path is relative to the desired-state directory."""
    pid_file: FsPath | None = None
    """nginx's pid file (its ``pid`` directive, e.g. /run/nginx.pid): reload by SIGHUP to that process."""
    test_command: Command | None = None
    """Configuration test run after writing (no shell), e.g. ``nginx -t -c /etc/nginx/nginx.conf``;
    null: ``<binary> -t``."""
    reload_command: Command | None = None
    """Reload command (no shell), e.g. ``systemctl reload nginx``; instead of pid_file."""
    binary: FsPath = Field(default="nginx", min_length=1)
    """The nginx executable for the default test and reload commands."""

    @model_validator(mode="after")
    def _one_reload(self) -> NginxTargetConfig:
        if self.pid_file is not None and self.reload_command is not None:
            raise PydanticCustomError("nginx_reload", "pid_file and reload_command exclude each other: choose one")
        return self


Config = NginxTargetConfig


def create(spec: TargetSpec, context: PluginContext) -> Target:
    """No I/O here: nginx is tested and reloaded at each deployment."""
    from certreconcile.plugins.targets.nginx import NginxTarget

    assert isinstance(spec.config, NginxTargetConfig)
    return NginxTarget(spec.name, spec.config, context.desired_dir, **verification(spec))
