"""The ``files`` target kind: its configuration and its factory.

The adapter: :mod:`certreconcile.plugins.targets.files`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from certreconcile.desired.fields import (
    Command,
    TargetDir,
    Wire,
)
from certreconcile.plugins.targets.verification import verification

if TYPE_CHECKING:
    from certreconcile.desired.model import TargetSpec
    from certreconcile.plugins.ports import Target
    from certreconcile.plugins.registry import PluginContext


__all__ = ["SUMMARY", "Config", "create"]

SUMMARY = 'Plain PEM files in a directory.'

class FilesTargetConfig(Wire):
    """Write each certificate to ``<dir>/<name>/{fullchain,chain,cert,privkey}.pem``."""

    dir: TargetDir = Field(min_length=1)
    """Output directory; a relative path is relative to the desired-state directory."""
    reload_command: Command | None = None
    """Command run after files changed (e.g. ``systemctl reload nginx``); null: none."""


Config = FilesTargetConfig


def create(spec: TargetSpec, context: PluginContext) -> Target:
    """No I/O here: the adapter is imported and built, nothing is contacted."""
    from certreconcile.plugins.targets.files import FilesTarget

    assert isinstance(spec.config, FilesTargetConfig)
    return FilesTarget(spec.name, spec.config, context.desired_dir, **verification(spec))
