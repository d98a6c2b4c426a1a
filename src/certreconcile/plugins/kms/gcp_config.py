"""The ``gcp`` KMS kind: its configuration and its factory.

The adapter: :mod:`certreconcile.plugins.kms.gcp`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from certreconcile.desired.fields import (
    FsPath,
    Wire,
)

if TYPE_CHECKING:
    from certreconcile.desired.model import KmsSpec
    from certreconcile.plugins.ports import Kms
    from certreconcile.plugins.registry import PluginContext


__all__ = ["SUMMARY", "Config", "create"]

SUMMARY = 'Keys wrapped by Google Cloud KMS.'

GCP_KEY_NAME_PATTERN = r"^projects/[^/\s]+/locations/[^/\s]+/keyRings/[^/\s]+/cryptoKeys/[^/\s:]+$"


class GcpKmsConfig(Wire):
    """Google Cloud KMS: a local data key per private key, encrypted by a CryptoKey with the row as AAD.

    The OAuth access token comes from ``GOOGLE_OAUTH_ACCESS_TOKEN`` or the GCE metadata server,
    never from this file.
    """

    key_name: str = Field(pattern=GCP_KEY_NAME_PATTERN)
    """The CryptoKey (purpose ENCRYPT_DECRYPT): ``projects/P/locations/L/keyRings/R/cryptoKeys/K``, not a version."""
    endpoint: str = Field(default="https://cloudkms.googleapis.com", pattern=r"^https?://")
    """Cloud KMS endpoint (a Private Service Connect endpoint, a test server); default: Google's own."""
    ca_bundle: FsPath | None = None
    """PEM file trusted for the endpoint's TLS; a relative path is relative to the desired-state directory."""


Config = GcpKmsConfig


def create(spec: KmsSpec, context: PluginContext) -> Kms:
    """No I/O and no credentials needed here: httpx and the access token are loaded at the first wrap or unwrap."""
    from certreconcile.plugins.kms.gcp import GcpKms
    from certreconcile.plugins.paths import optional_declared_path

    assert isinstance(spec.config, GcpKmsConfig)
    config = spec.config
    ca_bundle = optional_declared_path(config.ca_bundle, context.desired_dir)
    return GcpKms(config.key_name, endpoint=config.endpoint, ca_bundle=ca_bundle, env=context.env)
