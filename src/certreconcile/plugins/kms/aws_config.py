"""The ``aws`` KMS kind: its configuration and its factory.

The adapter: :mod:`certreconcile.plugins.kms.aws`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from certreconcile.desired.fields import (
    Wire,
)

if TYPE_CHECKING:
    from certreconcile.desired.model import KmsSpec
    from certreconcile.plugins.ports import Kms
    from certreconcile.plugins.registry import PluginContext


__all__ = ["SUMMARY", "Config", "create", "declared_key_id"]

SUMMARY = 'Keys wrapped by AWS KMS.'

class AwsKmsConfig(Wire):
    """AWS KMS: one GenerateDataKey (AES-256) per private key, bound to its row by an encryption context.

    Credentials come from the usual AWS environment (``AWS_ACCESS_KEY_ID``..., ``AWS_PROFILE``,
    instance roles), never from this file.
    """

    key_id: str = Field(min_length=1)
    """The KMS key wrapping the data keys: key id, key ARN, alias name (``alias/certs``) or alias ARN."""
    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]+$")
    """AWS region; default: from the key ARN, else ``AWS_REGION``/``AWS_DEFAULT_REGION``."""
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    """Another KMS endpoint (a VPC endpoint, a test server); default: AWS's own."""


Config = AwsKmsConfig


def create(spec: KmsSpec, context: PluginContext) -> Kms:
    """No I/O and no credentials needed here: boto3 is loaded at the first wrap or unwrap."""
    from certreconcile.plugins.kms.aws import AwsKms

    assert isinstance(spec.config, AwsKmsConfig)
    config = spec.config
    return AwsKms(config.key_id, region=config.region, endpoint_url=config.endpoint_url, env=context.env)


def declared_key_id(config: AwsKmsConfig, context: PluginContext) -> str | None:
    """The key ARN when declared as one (an alias names no fixed key)."""
    return config.key_id if config.key_id.startswith("arn:") and ":key/" in config.key_id else None
