"""The aws_acm target: import each certificate into AWS Certificate Manager (``ImportCertificate``).

A rotation re-imports onto the SAME ARN (``CertificateArn=``), so load balancers, CloudFront
distributions and API gateways using it pick the new certificate up without a change.

Which ACM certificate belongs to a name: ``certificate_arn`` when declared (pinned), else the
one tagged ``certreconcile:name=<name>`` (set at its first import). Nothing is persisted on our
side: ACM itself is the record, so a lost or rebuilt database, a second replica or a run from
another machine finds the same ARN, and no schema change is needed. The lookup reads
``ListCertificates`` (every key type and status) and ``ListTagsForCertificate`` once per ARN
not yet seen by this process; later misses only read the tags of ARNs that appeared since.
Two certificates carrying the same name tag (made by hand): the smallest ARN is used.

``observe`` reads the certificate back (``GetCertificate``) and fingerprints its leaf (SHA-256
of the DER), or with ``verify`` does a TLS handshake with that address.

boto3 is imported here only, and only at the first call: building the target does no I/O and
needs no credentials. Credentials come from the usual AWS environment. Errors name the AWS error
code and the endpoint, never AWS's message text, credentials or the private key; a request
refused before sending (parameter validation, whose text would hold the key) is re-raised
without its chain, and botocore's DEBUG log line of the ImportCertificate parameters is dropped.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from certreconcile.desired.model import DEFAULT_VERIFY_TIMEOUT
from certreconcile.domain.certs import read_cert_facts, split_pem_chain
from certreconcile.errors import TargetError
from certreconcile.plugins.aws_session import AwsClientError, aws_client
from certreconcile.plugins.kms._redact import display_url
from certreconcile.plugins.ports import DeployBundle, TargetObservation
from certreconcile.plugins.targets.aws_acm_config import AwsAcmTargetConfig
from certreconcile.plugins.targets.handshake import observe_served

__all__ = ["NAME_TAG", "AwsAcmTarget"]

NAME_TAG = "certreconcile:name"

# ListCertificates shows only RSA-1024/2048 certificates unless asked for the other key types.
_ALL_KEY_TYPES = [
    "RSA_1024",
    "RSA_2048",
    "RSA_3072",
    "RSA_4096",
    "EC_prime256v1",
    "EC_secp384r1",
    "EC_secp521r1",
]

# AWS error code -> (our code, hint)
_CLIENT_ERRORS: dict[str, tuple[str, str]] = {
    "AccessDeniedException": (
        "target-access-denied",
        "allow acm:ImportCertificate, ListCertificates, ListTagsForCertificate, AddTagsToCertificate, GetCertificate",
    ),
    "UnrecognizedClientException": ("target-access-denied", "check the AWS credentials in the environment"),
    "InvalidSignatureException": ("target-access-denied", "check the AWS credentials in the environment"),
    "InvalidClientTokenId": ("target-access-denied", "check the AWS credentials in the environment"),
    "SignatureDoesNotMatch": ("target-access-denied", "check the AWS credentials in the environment"),
    "ExpiredTokenException": ("target-access-denied", "the AWS session token expired: renew it"),
    "ResourceNotFoundException": ("target-acm-not-found", "check certificate_arn and the region"),
    "InvalidArnException": ("target-acm-not-found", "check certificate_arn and the region"),
    "ValidationException": ("target-acm-rejected", "ACM refused the certificate, its chain or its key"),
    "InvalidParameterException": ("target-acm-rejected", "ACM refused a parameter of the request"),
    "LimitExceededException": ("target-acm-limit", "the ACM certificate quota of the account is reached"),
    "TooManyTagsException": ("target-acm-rejected", "an ACM certificate takes at most 50 tags"),
    "InvalidTagException": ("target-acm-rejected", "check the tags of the aws_acm target"),
    "TagPolicyException": ("target-acm-rejected", "the organization's tag policy refuses these tags"),
    "ThrottlingException": ("target-throttled", "retry later"),
    "RequestInProgressException": ("target-throttled", "retry later"),
}


def _region_from_arn(arn: str | None) -> str | None:
    parts = (arn or "").split(":")
    if len(parts) >= 6 and parts[0] == "arn" and parts[2] == "acm" and parts[3]:
        return parts[3]
    return None


class _DropImportParameters(logging.Filter):
    """botocore logs every request's parameters at DEBUG: never those of ImportCertificate (the key)."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            return "ImportCertificate" not in record.getMessage()
        except Exception:  # noqa: BLE001 - a record that cannot be formatted is dropped, never shown
            return False


_LOG_FILTER = _DropImportParameters()


class AwsAcmTarget:
    def __init__(
        self,
        name: str,
        config: AwsAcmTargetConfig,
        *,
        env: Mapping[str, str],
        verify: str | None = None,
        verify_timeout: timedelta = DEFAULT_VERIFY_TIMEOUT,
        sni: str | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 15.0,
        max_attempts: int = 3,
    ) -> None:
        self.name = name
        self._config = config
        self._env = dict(env)
        self._region = (
            config.region
            or _region_from_arn(config.certificate_arn)
            or self._env.get("AWS_REGION")
            or self._env.get("AWS_DEFAULT_REGION")
            or None
        )
        self._verify = verify
        self._verify_timeout = verify_timeout
        self._sni = sni
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._max_attempts = max_attempts
        self._client: Any = None
        self._client_lock = threading.Lock()
        # The name-tag index: ARNs whose tags were read, and name -> ARN. One lock: lookups are rare.
        self._index_lock = threading.Lock()
        self._seen: set[str] = set()
        self._by_name: dict[str, str] = {}

    @property
    def _where(self) -> str:
        if self._config.endpoint_url:
            return display_url(self._config.endpoint_url)
        return f"ACM in {self._region or 'the default region'}"

    def _fail(self, message: str, code: str, hint: str = "") -> TargetError:
        return TargetError(f"target {self.name}: {message}", code=code, hint=hint)

    # ------------------------------------------------------------------ AWS calls

    def _acm(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        endpoint_logger = logging.getLogger("botocore.endpoint")
        if _LOG_FILTER not in endpoint_logger.filters:
            endpoint_logger.addFilter(_LOG_FILTER)
        try:
            return aws_client(
                "acm",
                env=self._env,
                region=self._region,
                endpoint_url=self._config.endpoint_url,
                connect_timeout=self._connect_timeout,
                read_timeout=self._read_timeout,
                max_attempts=self._max_attempts,
            )
        except AwsClientError as exc:
            if exc.reason == "sdk-missing":
                raise self._fail(
                    "the aws_acm target needs boto3, which is not installed",
                    "target-sdk-missing",
                    "pip install 'certreconcile[aws]'",
                ) from exc
            if exc.reason == "profile-not-found":
                raise self._fail(
                    "the AWS profile named by AWS_PROFILE does not exist", "target-credentials-missing"
                ) from exc
            if exc.reason == "no-region":
                raise self._fail(
                    "no AWS region is configured for the aws_acm target",
                    "target-config-invalid",
                    "set aws_acm.region, certificate_arn, or AWS_REGION",
                ) from exc
            raise self._fail(
                f"the ACM client could not be created ({exc.detail})", "target-config-invalid"
            ) from exc

    def _call(self, operation: str, what: str, **arguments: Any) -> dict[str, Any]:
        client = self._acm()
        import botocore.exceptions

        try:
            response: dict[str, Any] = getattr(client, operation)(**arguments)
        except botocore.exceptions.ClientError as exc:
            aws_code = str(exc.response.get("Error", {}).get("Code", "unknown"))
            code, hint = _CLIENT_ERRORS.get(aws_code, ("target-error", "see the AWS error code"))
            raise self._fail(f"ACM {what} failed at {self._where}: {aws_code}", code, hint) from exc
        except (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError) as exc:
            raise self._fail(
                f"ACM {what}: no AWS credentials found",
                "target-credentials-missing",
                "set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with an instance role",
            ) from exc
        except (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectionError,
            botocore.exceptions.ConnectionClosedError,
            botocore.exceptions.ReadTimeoutError,
        ) as exc:
            raise self._fail(
                f"ACM {what}: cannot reach {self._where} ({type(exc).__name__})",
                "target-unreachable",
                "check the network, aws_acm.region and aws_acm.endpoint_url; retry later",
            ) from exc
        except botocore.exceptions.ParamValidationError:
            # Its text quotes the parameter values (the private key): never chained.
            raise self._fail(f"ACM {what}: the request was refused before sending", "target-acm-rejected") from None
        except botocore.exceptions.BotoCoreError as exc:
            error = self._fail(f"ACM {what} failed at {self._where} ({type(exc).__name__})", "target-error")
            if operation == "import_certificate":
                raise error from None  # botocore's text may quote the request parameters
            raise error from exc
        return response

    # ------------------------------------------------------------------ which ARN

    def _scan(self) -> None:
        """Read the tags of every ACM certificate not seen yet (caller holds the index lock)."""
        marker: str | None = None
        while True:
            arguments: dict[str, Any] = {"Includes": {"keyTypes": _ALL_KEY_TYPES}, "MaxItems": 1000}
            if marker:
                arguments["NextToken"] = marker
            page = self._call("list_certificates", "ListCertificates", **arguments)
            for summary in page.get("CertificateSummaryList", []):
                arn = str(summary.get("CertificateArn", ""))
                if not arn or arn in self._seen or summary.get("Type", "IMPORTED") != "IMPORTED":
                    continue
                tags = self._call("list_tags_for_certificate", "ListTagsForCertificate", CertificateArn=arn)
                self._seen.add(arn)
                for tag in tags.get("Tags", []):
                    if tag.get("Key") == NAME_TAG and tag.get("Value"):
                        owner = str(tag["Value"])
                        known = self._by_name.get(owner)
                        self._by_name[owner] = arn if known is None else min(known, arn)
            marker = page.get("NextToken")
            if not marker:
                return

    def certificate_arn(self, name: str) -> str | None:
        """The ACM certificate of ``name``: the pinned ARN, else the one carrying its name tag."""
        if self._config.certificate_arn:
            return self._config.certificate_arn
        with self._index_lock:
            if name not in self._by_name:
                self._scan()
            return self._by_name.get(name)

    def _forget(self, name: str, arn: str) -> None:
        with self._index_lock:
            if self._by_name.get(name) == arn:
                del self._by_name[name]

    def _tag_list(self, name: str) -> list[dict[str, str]]:
        extra = [{"Key": key, "Value": value} for key, value in sorted(self._config.tags.items())]
        return [{"Key": NAME_TAG, "Value": name}, *extra]

    # ------------------------------------------------------------------ Target

    def deploy(self, bundle: DeployBundle) -> None:
        """Import (first time) or re-import onto the same ARN. Safe to repeat."""
        arn = self.certificate_arn(bundle.name)
        pinned = self._config.certificate_arn is not None
        if pinned and arn is not None:
            tags = self._call("list_tags_for_certificate", "ListTagsForCertificate", CertificateArn=arn)
            owner = next((t.get("Value") for t in tags.get("Tags", []) if t.get("Key") == NAME_TAG), None)
            if owner not in (None, bundle.name):
                raise self._fail(
                    f"the ACM certificate {arn} belongs to {owner}, not {bundle.name}",
                    "target-acm-arn-taken",
                    "a target with certificate_arn serves one certificate name; give each name its own target",
                )
        arguments: dict[str, Any] = {
            "Certificate": bundle.cert_pem.encode("ascii"),
            "PrivateKey": bundle.key_pem.reveal(),
        }
        if split_pem_chain(bundle.chain_pem):
            arguments["CertificateChain"] = bundle.chain_pem.encode("ascii")
        if arn is None:
            arguments["Tags"] = self._tag_list(bundle.name)  # ACM takes tags at the first import only
            response = self._call("import_certificate", f"import of {bundle.name}", **arguments)
        else:
            try:
                response = self._call(
                    "import_certificate", f"re-import of {bundle.name}", CertificateArn=arn, **arguments
                )
            except TargetError as exc:
                if pinned or exc.code != "target-acm-not-found":
                    raise
                # The tagged certificate was deleted since it was indexed: import anew.
                self._forget(bundle.name, arn)
                arguments["Tags"] = self._tag_list(bundle.name)
                response = self._call("import_certificate", f"import of {bundle.name}", **arguments)
                arn = None
        new_arn = str(response.get("CertificateArn", ""))
        if not new_arn:
            raise self._fail(f"ACM import of {bundle.name} returned no ARN", "target-error")
        if arn is not None:
            # ACM takes no tags on a re-import. Set them again: declared tags may have changed, a pinned
            # ARN gets its owner, and a name tag removed by hand (or lost by an emulator) comes back.
            self._call(
                "add_tags_to_certificate",
                f"tagging of {bundle.name}",
                CertificateArn=new_arn,
                Tags=self._tag_list(bundle.name),
            )
        if not pinned:
            with self._index_lock:
                self._seen.add(new_arn)
                self._by_name[bundle.name] = new_arn

    def observe(self, name: str, domains: tuple[str, ...]) -> TargetObservation:
        if self._verify:
            return observe_served(self._verify, domains, self._sni)
        try:
            arn = self.certificate_arn(name)
            if arn is None:
                return TargetObservation(
                    fingerprint=None, error=f"no ACM certificate tagged {NAME_TAG}={name} at {self._where}"
                )
            response = self._call("get_certificate", f"read-back of {name}", CertificateArn=arn)
        except TargetError as exc:
            return TargetObservation(fingerprint=None, error=exc.one_line())
        pem = response.get("Certificate")
        try:
            facts = read_cert_facts(str(pem))
        except ValueError:
            return TargetObservation(fingerprint=None, error=f"ACM returned an unreadable certificate for {arn}")
        return TargetObservation(
            fingerprint=facts.fingerprint, serial_number=facts.serial_number, not_after=facts.not_after
        )

    def verify_timeout(self) -> timedelta:
        return self._verify_timeout
