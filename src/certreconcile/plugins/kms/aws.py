"""AWS KMS: ``GenerateDataKey`` (AES-256) per private key, ``Decrypt`` on use.

Every call carries the row's encryption context (table, row id, key version, purpose);
AWS binds the wrapped data key to it, so a data key moved to another row does not
unwrap, and CloudTrail logs which row each decrypt was for.

boto3 is imported here only, and only when a key is first wrapped or unwrapped: building
the adapter does no I/O and needs no credentials (``plan`` never gets that far).
Credentials: explicit ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``/``AWS_SESSION_TOKEN``
or ``AWS_PROFILE`` in the settings' environment, else boto3's own chain (config files,
container and instance roles).

Errors are :class:`~certreconcile.errors.KmsError` with a stable code; they name the AWS
error code and the endpoint host, never AWS's message text, credentials or key bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from certreconcile.errors import KmsError
from certreconcile.plugins.aws_session import AwsClientError, aws_client
from certreconcile.plugins.kms._redact import display_url
from certreconcile.plugins.ports import EncryptionContext, SecretBytes, WrappedKey

__all__ = ["AwsKms"]

_DEK_BYTES = 32

# AWS error code -> (our code, hint)
_CLIENT_ERRORS: dict[str, tuple[str, str]] = {
    "InvalidCiphertextException": (
        "kms-decrypt-failed",
        "the stored key_ref belongs to another row, was altered, or was wrapped by another key",
    ),
    "IncorrectKeyException": ("kms-wrong-master-key", "the data key was wrapped by another KMS key"),
    "AccessDeniedException": (
        "kms-access-denied",
        "allow kms:GenerateDataKey, kms:Decrypt (and kms:Encrypt for rewrap) on the key",
    ),
    "UnrecognizedClientException": ("kms-access-denied", "check the AWS credentials in the environment"),
    "InvalidSignatureException": ("kms-access-denied", "check the AWS credentials in the environment"),
    "ExpiredTokenException": ("kms-access-denied", "the AWS session token expired: renew it"),
    "InvalidClientTokenId": ("kms-access-denied", "check the AWS credentials in the environment"),
    "NotFoundException": ("kms-key-not-found", "check kms.aws.key_id and region"),
    "DisabledException": ("kms-key-disabled", "enable the KMS key"),
    "KMSInvalidStateException": ("kms-key-disabled", "the KMS key is pending deletion or import"),
    "KeyUnavailableException": ("kms-unavailable", "retry later"),
    "DependencyTimeoutException": ("kms-unavailable", "retry later"),
    "KMSInternalException": ("kms-unavailable", "retry later"),
    "ThrottlingException": ("kms-throttled", "retry later, or raise the KMS request quota"),
    "LimitExceededException": ("kms-throttled", "retry later, or raise the KMS request quota"),
}


def _region_from_arn(key_id: str) -> str | None:
    parts = key_id.split(":")
    if len(parts) >= 6 and parts[0] == "arn" and parts[2] == "kms" and parts[3]:
        return parts[3]
    return None


class AwsKms:
    name = "aws"

    def __init__(
        self,
        key_id: str,
        *,
        region: str | None = None,
        endpoint_url: str | None = None,
        env: Mapping[str, str] | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        max_attempts: int = 3,
    ) -> None:
        self._key_id = key_id
        self._env = dict(env or {})
        self._region = (
            region
            or _region_from_arn(key_id)
            or self._env.get("AWS_REGION")
            or self._env.get("AWS_DEFAULT_REGION")
            or None
        )
        self._endpoint_url = endpoint_url
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_attempts = max_attempts
        self._client: Any = None
        self._lock = threading.Lock()

    @property
    def _where(self) -> str:
        if self._endpoint_url:
            return display_url(self._endpoint_url)
        return f"AWS KMS in {self._region or 'the default region'}"

    def _kms_client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        try:
            return aws_client(
                "kms",
                env=self._env,
                region=self._region,
                endpoint_url=self._endpoint_url,
                connect_timeout=self._connect_timeout,
                read_timeout=self._read_timeout,
                max_attempts=self._max_attempts,
            )
        except AwsClientError as exc:
            if exc.reason == "sdk-missing":
                raise KmsError(
                    "the aws KMS needs boto3, which is not installed",
                    code="kms-sdk-missing",
                    hint="pip install 'certreconcile[aws]'",
                ) from exc
            if exc.reason == "profile-not-found":
                raise KmsError(
                    "the AWS profile named by AWS_PROFILE does not exist", code="kms-credentials-missing"
                ) from exc
            if exc.reason == "no-region":
                raise KmsError(
                    "no AWS region is configured for the aws KMS",
                    code="kms-config-invalid",
                    hint="set kms.aws.region, use a key ARN, or set AWS_REGION",
                ) from exc
            raise KmsError(
                f"the aws KMS client could not be created ({exc.detail})", code="kms-config-invalid"
            ) from exc

    def _call(self, operation: str, context: EncryptionContext, **arguments: Any) -> dict[str, Any]:
        client = self._kms_client()
        import botocore.exceptions

        what = f"{operation} for {context.table} {context.row_id}"
        try:
            response: dict[str, Any] = getattr(client, operation)(**arguments)
        except botocore.exceptions.ClientError as exc:
            aws_code = str(exc.response.get("Error", {}).get("Code", "unknown"))
            code, hint = _CLIENT_ERRORS.get(aws_code, ("kms-error", "see the AWS error code"))
            raise KmsError(f"{what} failed at {self._where}: {aws_code}", code=code, hint=hint) from exc
        except (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError) as exc:
            raise KmsError(
                f"{what}: no AWS credentials found",
                code="kms-credentials-missing",
                hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with an instance role",
            ) from exc
        except (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectionError,
            botocore.exceptions.ConnectionClosedError,
            botocore.exceptions.ReadTimeoutError,
        ) as exc:
            raise KmsError(
                f"{what}: cannot reach {self._where} ({type(exc).__name__})",
                code="kms-unavailable",
                hint="check the network and kms.aws.endpoint_url; retry later",
            ) from exc
        except botocore.exceptions.ParamValidationError as exc:
            raise KmsError(
                f"{what}: the request was refused before sending (a damaged key_ref?)", code="kms-decrypt-failed"
            ) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise KmsError(f"{what} failed at {self._where} ({type(exc).__name__})", code="kms-error") from exc
        return response

    def generate_data_key(self, context: EncryptionContext) -> tuple[SecretBytes, WrappedKey]:
        response = self._call(
            "generate_data_key",
            context,
            KeyId=self._key_id,
            KeySpec="AES_256",
            EncryptionContext=context.as_mapping(),
        )
        plaintext = response.get("Plaintext")
        blob = response.get("CiphertextBlob")
        key_arn = response.get("KeyId")
        if not isinstance(plaintext, bytes) or len(plaintext) != _DEK_BYTES or not isinstance(blob, bytes):
            raise KmsError(f"{self._where} returned a malformed data key", code="kms-error")
        return SecretBytes(plaintext), WrappedKey(key_id=str(key_arn or self._key_id), ciphertext=blob)

    def wrap_data_key(self, dek: SecretBytes, context: EncryptionContext) -> WrappedKey:
        """``Encrypt`` an existing data key under the row's encryption context (``kms rewrap``)."""
        if len(dek.reveal()) != _DEK_BYTES:
            raise KmsError("a data key to wrap is not 256 bits", code="kms-error")
        response = self._call(
            "encrypt",
            context,
            KeyId=self._key_id,
            Plaintext=dek.reveal(),
            EncryptionContext=context.as_mapping(),
        )
        blob = response.get("CiphertextBlob")
        key_arn = response.get("KeyId")
        if not isinstance(blob, bytes) or not blob:
            raise KmsError(f"{self._where} returned a malformed wrapped key", code="kms-error")
        return WrappedKey(key_id=str(key_arn or self._key_id), ciphertext=blob)

    def decrypt_data_key(self, wrapped: WrappedKey, context: EncryptionContext) -> SecretBytes:
        # KeyId pins the key the envelope names: AWS refuses a blob wrapped by any other key.
        response = self._call(
            "decrypt",
            context,
            CiphertextBlob=wrapped.ciphertext,
            KeyId=wrapped.key_id,
            EncryptionContext=context.as_mapping(),
        )
        plaintext = response.get("Plaintext")
        if not isinstance(plaintext, bytes) or len(plaintext) != _DEK_BYTES:
            raise KmsError(f"{self._where} returned a malformed data key", code="kms-error")
        return SecretBytes(plaintext)
