"""The ``traefik`` target kind: its configuration and its factory.

The adapter: :mod:`certreconcile.plugins.targets.traefik`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from certreconcile.desired.fields import (
    TargetDir,
    Wire,
)
from certreconcile.plugins.targets.verification import verification

if TYPE_CHECKING:
    from certreconcile.desired.model import TargetSpec
    from certreconcile.plugins.ports import Target
    from certreconcile.plugins.registry import PluginContext


__all__ = ["SUMMARY", "Config", "create"]

SUMMARY = "Traefik's file provider (a watched directory)."

class TraefikTargetConfig(Wire):
    """Traefik's file provider: ``<dynamic_dir>/certreconcile-<name>.yaml`` lists the certificate
    (``tls.certificates``); its PEM files go to ``<dynamic_dir>/<name>/``.

    Traefik must watch the directory (``providers.file.directory`` with ``watch: true``).
    """

    dynamic_dir: TargetDir = Field(min_length=1)
    """The file provider's directory; a relative path is relative to the desired-state directory."""


Config = TraefikTargetConfig


def create(spec: TargetSpec, context: PluginContext) -> Target:
    """No I/O here: the adapter is imported and built, nothing is contacted."""
    from certreconcile.plugins.targets.traefik import TraefikTarget

    assert isinstance(spec.config, TraefikTargetConfig)
    return TraefikTarget(spec.name, spec.config, context.desired_dir, **verification(spec))
