"""The ``envoy`` target kind: its configuration and its factory.

The adapter: :mod:`certreconcile.plugins.targets.envoy`.
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

SUMMARY = "Envoy's file-based SDS (a watched directory)."

class EnvoyTargetConfig(Wire):
    """File-based SDS for Envoy: ``<sds_dir>/<name>/sds.yaml`` names the secret ``<name>``.

    Each folder is swapped as a whole like a Kubernetes volume: ``..data`` is a symlink to a
    versioned directory, replaced by ``rename(2)``; Envoy watches the folder (``watched_directory``).
    """

    sds_dir: TargetDir = Field(min_length=1)
    """Output directory; a relative path is relative to the desired-state directory."""


Config = EnvoyTargetConfig


def create(spec: TargetSpec, context: PluginContext) -> Target:
    """No I/O here: the adapter is imported and built, nothing is contacted."""
    from certreconcile.plugins.targets.envoy import EnvoyTarget

    assert isinstance(spec.config, EnvoyTargetConfig)
    return EnvoyTarget(spec.name, spec.config, context.desired_dir, **verification(spec))
