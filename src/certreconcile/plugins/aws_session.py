"""One way to build a boto3 client, shared by the AWS plug-ins (KMS ``aws``, DNS ``route53``, target ``aws_acm``).

Credentials come from the settings' environment (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/
``AWS_SESSION_TOKEN``, else ``AWS_PROFILE``), else boto3's own chain (config files, instance
roles); never from the desired state. boto3 is imported here only, at the first call: building a
plug-in does no I/O. Each plug-in turns :class:`AwsClientError` into its own error and code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

__all__ = ["AwsClientError", "aws_client"]

Reason = Literal["sdk-missing", "profile-not-found", "no-region", "invalid"]


class AwsClientError(Exception):
    """The client could not be built: ``reason`` says why, ``detail`` names the botocore error."""

    def __init__(self, reason: Reason, detail: str = "") -> None:
        super().__init__(reason if not detail else f"{reason} ({detail})")
        self.reason: Reason = reason
        self.detail = detail


def aws_client(
    service: str,
    *,
    env: Mapping[str, str],
    region: str | None,
    endpoint_url: str | None,
    connect_timeout: float,
    read_timeout: float,
    max_attempts: int,
) -> Any:
    """A boto3 client of ``service`` (``kms``, ``route53``, ``acm``) with bounded timeouts and retries."""
    try:
        import boto3
        import botocore.config
        import botocore.exceptions
    except ImportError as exc:
        raise AwsClientError("sdk-missing") from exc
    try:
        session = boto3.session.Session(
            aws_access_key_id=env.get("AWS_ACCESS_KEY_ID") or None,
            aws_secret_access_key=env.get("AWS_SECRET_ACCESS_KEY") or None,
            aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
            profile_name=None if env.get("AWS_ACCESS_KEY_ID") else (env.get("AWS_PROFILE") or None),
            region_name=region,
        )
        config = botocore.config.Config(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            retries={"max_attempts": max_attempts, "mode": "standard"},
        )
        return session.client(service, endpoint_url=endpoint_url, config=config)
    except botocore.exceptions.ProfileNotFound as exc:
        raise AwsClientError("profile-not-found") from exc
    except botocore.exceptions.NoRegionError as exc:
        raise AwsClientError("no-region") from exc
    except (botocore.exceptions.BotoCoreError, ValueError) as exc:
        raise AwsClientError("invalid", type(exc).__name__) from exc
