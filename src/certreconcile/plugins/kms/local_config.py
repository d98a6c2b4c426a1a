"""The ``local`` KMS kind: its configuration and its factory.

The adapter: :mod:`certreconcile.plugins.kms.local`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from certreconcile.desired.fields import (
    FsPath,
    Wire,
)

if TYPE_CHECKING:
    from certreconcile.desired.model import KmsSpec
    from certreconcile.plugins.ports import Kms
    from certreconcile.plugins.registry import PluginContext


__all__ = ["SUMMARY", "Config", "create", "declared_key_id", "local_kms_key_file"]

SUMMARY = 'Keys wrapped with a local key-encryption key.'

class LocalKmsConfig(Wire):
    """The local KMS: keys are wrapped with a key-encryption key kept in a local file."""

    key_file: FsPath | None = None
    """Path of the key-encryption key file; default: inside the data directory. Never the key itself."""


Config = LocalKmsConfig


def local_kms_key_file(config: LocalKmsConfig | None, context: PluginContext) -> Path:
    """CERTRECONCILE_LOCAL_KMS_KEY_FILE, else the declared key_file, else ``<data dir>/local-kms.key``."""
    from certreconcile.plugins.paths import declared_path

    from_env = context.env.get("CERTRECONCILE_LOCAL_KMS_KEY_FILE")
    if from_env:
        return Path(from_env)
    if config is not None and config.key_file:
        return declared_path(config.key_file, context.desired_dir)
    return context.data_dir / "local-kms.key"


def create(spec: KmsSpec, context: PluginContext) -> Kms:
    from certreconcile.plugins.kms.local import LocalKms

    config = spec.config if isinstance(spec.config, LocalKmsConfig) else None
    return LocalKms(local_kms_key_file(config, context))


def declared_key_id(config: LocalKmsConfig, context: PluginContext) -> str | None:
    """A hash of the key file, read (never created) only when it exists."""
    from certreconcile.errors import KmsError
    from certreconcile.plugins.kms.local import LocalKms

    try:
        return LocalKms(local_kms_key_file(config, context), create=False).key_id
    except KmsError:
        return None
