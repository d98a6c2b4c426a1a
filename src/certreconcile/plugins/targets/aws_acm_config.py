"""The ``aws_acm`` target kind: its configuration and its factory.

The adapter: :mod:`certreconcile.plugins.targets.aws_acm`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field, field_validator
from pydantic_core import PydanticCustomError

from certreconcile.desired.fields import (
    Wire,
)
from certreconcile.plugins.targets.verification import verification

if TYPE_CHECKING:
    from certreconcile.desired.model import TargetSpec
    from certreconcile.plugins.ports import Target
    from certreconcile.plugins.registry import PluginContext


__all__ = ["SUMMARY", "Config", "create"]

SUMMARY = 'AWS Certificate Manager (import, re-import onto the same ARN).'

_ACM_NAME_TAG = "certreconcile:name"


class AwsAcmTargetConfig(Wire):
    """Import each certificate into AWS Certificate Manager; a rotation re-imports onto the same ARN.

    The ACM certificate of a name is found by its tag ``certreconcile:name=<name>`` (set at the
    first import), or pinned with ``certificate_arn``. Credentials come from the usual AWS
    environment (``AWS_ACCESS_KEY_ID``..., ``AWS_PROFILE``, instance roles), never from this file.
    Needs acm:ImportCertificate, ListCertificates, ListTagsForCertificate, AddTagsToCertificate,
    GetCertificate.
    """

    region: str | None = Field(default=None, pattern=r"^[a-z0-9-]+$")
    """AWS region; default: from certificate_arn, else ``AWS_REGION``/``AWS_DEFAULT_REGION``."""
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://")
    """Another ACM endpoint (a VPC endpoint, a test server); default: AWS's own."""
    certificate_arn: str | None = Field(
        default=None, pattern=r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:[0-9]{12}:certificate/[A-Za-z0-9-]+$"
    )
    """Re-import onto this existing ACM certificate (then the target serves ONE certificate name);
    null: the certificate tagged ``certreconcile:name=<name>``, imported anew when there is none."""
    tags: dict[str, str] = Field(default_factory=dict)
    """Extra tags set on the ACM certificate (besides ``certreconcile:name``)."""

    @field_validator("tags")
    @classmethod
    def _valid_tags(cls, value: dict[str, str]) -> dict[str, str]:
        for key, text in value.items():
            if not 1 <= len(key) <= 128 or len(text) > 256:
                raise PydanticCustomError(
                    "acm_tag", "tag {key!r}: keys have 1-128 characters, values at most 256", {"key": key}
                )
            if key.lower().startswith("aws:") or key == _ACM_NAME_TAG:
                raise PydanticCustomError("acm_tag_reserved", "the tag key {key} is reserved", {"key": key})
        return value


Config = AwsAcmTargetConfig


def create(spec: TargetSpec, context: PluginContext) -> Target:
    """No I/O and no credentials needed here: boto3 is loaded at the first import or read-back."""
    from certreconcile.plugins.targets.aws_acm import AwsAcmTarget

    assert isinstance(spec.config, AwsAcmTargetConfig)
    return AwsAcmTarget(spec.name, spec.config, env=context.env, **verification(spec))
