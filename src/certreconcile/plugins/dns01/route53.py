"""DNS-01 through AWS Route 53.

A TXT name is one record set holding every value: ``present`` reads it and UPSERTs it with
the value added, ``cleanup`` UPSERTs it without the value, or DELETEs it (exactly as read)
when its last value goes. ``wait_until_visible`` waits until each value is in its record set
and the change that put it there is ``INSYNC`` (Route 53 has then pushed it to all of its
name servers); the authoritative-server check follows only when ``nameservers`` is declared.

boto3 is imported here only, and only at the first call: building the provider does no I/O
and needs no credentials. Credentials come from the usual AWS environment. Errors name the
AWS error code, never AWS's message text or credentials.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from certreconcile.errors import DnsError
from certreconcile.plugins.aws_session import AwsClientError, aws_client
from certreconcile.plugins.dns01.route53_config import Route53Config
from certreconcile.plugins.ports import DnsTxtRecord

__all__ = ["Route53Provider", "quote_txt", "unquote_txt"]

_TTL = 60
_FIRST_INTERVAL = 0.1
_MAX_INTERVAL = 5.0

_HINTS: dict[str, tuple[str, str]] = {
    "AccessDenied": ("dns-auth-failed", "allow route53:ChangeResourceRecordSets, ListResourceRecordSets, GetChange"),
    "AccessDeniedException": ("dns-auth-failed", "check the AWS credentials and the IAM policy"),
    "InvalidClientTokenId": ("dns-auth-failed", "check the AWS credentials in the environment"),
    "SignatureDoesNotMatch": ("dns-auth-failed", "check the AWS credentials in the environment"),
    "ExpiredToken": ("dns-auth-failed", "the AWS session token expired: renew it"),
    "NoSuchHostedZone": ("dns-zone-not-found", "check route53.hosted_zone_id"),
    "Throttling": ("dns-throttled", "retry later"),
    "PriorRequestNotComplete": ("dns-throttled", "retry later"),
}

_TXT_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')


def quote_txt(value: str) -> str:
    """A TXT value as Route 53 writes it: one double-quoted string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unquote_txt(text: str) -> str:
    """The value of a Route 53 TXT record (its quoted strings joined)."""
    parts = _TXT_STRING.findall(text)
    if not parts:
        return text
    return "".join(re.sub(r"\\(.)", r"\1", part) for part in parts)


class Route53Provider:
    """One declared ``route53`` provider."""

    def __init__(
        self,
        name: str,
        config: Route53Config,
        *,
        env: Mapping[str, str],
        propagation: Callable[[tuple[DnsTxtRecord, ...], timedelta], None] | None,
        max_timeout: timedelta,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self._config = config
        self._env = dict(env)
        self._propagation = propagation  # None: INSYNC is enough
        self._max_timeout = max_timeout
        self._sleep = sleep
        self._client: Any = None
        self._zones: dict[str, str] = {}
        self._changes: dict[str, str] = {}  # fqdn -> id of the last change this provider made to it
        self._lock = threading.Lock()
        # Read-merge-write of one record set: serialised within this process. Route 53 offers no
        # conditional UPSERT, so two processes changing the same name at once can still race.
        self._write_lock = threading.Lock()

    # ------------------------------------------------------------------ AWS calls

    def _route53(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self._make_client()
            return self._client

    def _make_client(self) -> Any:
        env = self._env
        try:
            return aws_client(
                "route53",
                env=env,
                # Route 53 is global; the region only picks the signing endpoint
                region=self._config.region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
                endpoint_url=self._config.endpoint_url,
                connect_timeout=5,
                read_timeout=15,
                max_attempts=5,
            )
        except AwsClientError as exc:
            if exc.reason == "sdk-missing":
                raise DnsError(
                    "the route53 DNS provider needs boto3, which is not installed",
                    code="dns-sdk-missing",
                    hint="pip install 'certreconcile[aws]'",
                ) from exc
            if exc.reason == "profile-not-found":
                raise DnsError(
                    "the AWS profile named by AWS_PROFILE does not exist", code="dns-credentials-missing"
                ) from exc
            raise DnsError(
                f"the route53 client could not be created ({exc.detail or 'NoRegionError'})",
                code="dns-config-invalid",
            ) from exc

    def _call(self, operation: str, what: str, **arguments: Any) -> dict[str, Any]:
        client = self._route53()
        import botocore.exceptions

        try:
            response: dict[str, Any] = getattr(client, operation)(**arguments)
        except botocore.exceptions.ClientError as exc:
            aws_code = str(exc.response.get("Error", {}).get("Code", "unknown"))
            code, hint = _HINTS.get(aws_code, ("dns-provider-error", "see the AWS error code"))
            raise DnsError(f"route53 {what} failed: {aws_code}", code=code, hint=hint) from exc
        except (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError) as exc:
            raise DnsError(
                f"route53 {what}: no AWS credentials found",
                code="dns-credentials-missing",
                hint="set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE, or run with an instance role",
            ) from exc
        except botocore.exceptions.BotoCoreError as exc:
            raise DnsError(
                f"route53 {what} failed ({type(exc).__name__})",
                code="dns-server-unreachable",
                hint="check the network and route53.endpoint_url; retry later",
            ) from exc
        return response

    # ------------------------------------------------------------------ records

    def _zone_id(self, fqdn: str) -> str:
        if self._config.hosted_zone_id:
            return self._config.hosted_zone_id.rsplit("/", 1)[-1]
        labels = fqdn.rstrip(".").split(".")
        for start in range(len(labels) - 1):
            candidate = ".".join(labels[start:]) + "."
            if candidate in self._zones:
                return self._zones[candidate]
            found = self._call(
                "list_hosted_zones_by_name", f"finding the zone of {fqdn}", DNSName=candidate, MaxItems="10"
            )
            for zone in found.get("HostedZones", []):
                if zone.get("Name") == candidate and not zone.get("Config", {}).get("PrivateZone", False):
                    zone_id = str(zone["Id"]).rsplit("/", 1)[-1]
                    self._zones[candidate] = zone_id
                    return zone_id
        raise DnsError(
            f"no public Route 53 hosted zone holds {fqdn}",
            code="dns-zone-not-found",
            hint="create the zone, or set route53.hosted_zone_id",
        )

    def _record_set(self, zone_id: str, fqdn: str) -> dict[str, Any] | None:
        listed = self._call(
            "list_resource_record_sets",
            f"reading {fqdn}",
            HostedZoneId=zone_id,
            StartRecordName=fqdn,
            StartRecordType="TXT",
            MaxItems="1",
        )
        for record_set in listed.get("ResourceRecordSets", []):
            if str(record_set.get("Name", "")).rstrip(".").lower() == fqdn and record_set.get("Type") == "TXT":
                return dict(record_set)
        return None

    @staticmethod
    def _values(record_set: dict[str, Any] | None) -> list[str]:
        if record_set is None:
            return []
        return [unquote_txt(str(record["Value"])) for record in record_set.get("ResourceRecords", [])]

    def _change(self, zone_id: str, fqdn: str, action: str, record_set: dict[str, Any], what: str) -> None:
        response = self._call(
            "change_resource_record_sets",
            what,
            HostedZoneId=zone_id,
            ChangeBatch={
                "Comment": "certreconcile dns-01",
                "Changes": [{"Action": action, "ResourceRecordSet": record_set}],
            },
        )
        change_id = str(response.get("ChangeInfo", {}).get("Id", ""))
        if change_id:
            with self._lock:
                self._changes[fqdn] = change_id

    # ------------------------------------------------------------------ Dns01Provider

    def present(self, record: DnsTxtRecord) -> None:
        zone_id = self._zone_id(record.fqdn)
        with self._write_lock:
            self._present(zone_id, record)

    def _present(self, zone_id: str, record: DnsTxtRecord) -> None:
        current = self._record_set(zone_id, record.fqdn)
        values = self._values(current)
        if record.value in values:
            return
        ttl = int(current.get("TTL", _TTL)) if current else _TTL
        kept = list(current.get("ResourceRecords", [])) if current else []  # other values exactly as stored
        merged = {
            "Name": record.fqdn + ".",
            "Type": "TXT",
            "TTL": ttl,
            "ResourceRecords": [*kept, {"Value": quote_txt(record.value)}],
        }
        self._change(zone_id, record.fqdn, "UPSERT", merged, f"adding a TXT value to {record.fqdn}")

    def cleanup(self, record: DnsTxtRecord) -> None:
        zone_id = self._zone_id(record.fqdn)
        with self._write_lock:
            self._cleanup(zone_id, record)

    def _cleanup(self, zone_id: str, record: DnsTxtRecord) -> None:
        current = self._record_set(zone_id, record.fqdn)
        values = self._values(current)
        if current is None or record.value not in values:
            return
        rest = [item for item in current.get("ResourceRecords", []) if unquote_txt(str(item["Value"])) != record.value]
        what = f"removing a TXT value of {record.fqdn}"
        if not rest:
            self._change(zone_id, record.fqdn, "DELETE", current, what)  # DELETE must match the set exactly
            return
        remaining = {**current, "ResourceRecords": rest}
        self._change(zone_id, record.fqdn, "UPSERT", remaining, what)

    def check(self) -> str:
        """``certreconcile check``: one read-only call with the credentials (the declared hosted zone, else
        the list of zones); missing or refused credentials fail here."""
        if self._config.hosted_zone_id:
            zone_id = self._config.hosted_zone_id.rsplit("/", 1)[-1]
            self._call("get_hosted_zone", "checking the credentials", Id=zone_id)
            return f"the credentials may read hosted zone {zone_id}"
        self._call("list_hosted_zones_by_name", "checking the credentials", MaxItems="1")
        return "the credentials may list the hosted zones"

    def wait_until_visible(self, records: tuple[DnsTxtRecord, ...], timeout: timedelta) -> None:
        budget = min(timeout, self._max_timeout)
        deadline = time.monotonic() + budget.total_seconds()
        interval = _FIRST_INTERVAL
        pending = list(dict.fromkeys(records))
        while pending:
            status = ""
            for record in list(pending):
                zone_id = self._zone_id(record.fqdn)
                if record.value not in self._values(self._record_set(zone_id, record.fqdn)):
                    status = f"the TXT record {record.fqdn} does not hold the value in its hosted zone"
                    continue
                with self._lock:
                    change_id = self._changes.get(record.fqdn)
                if change_id is not None:
                    change = self._call("get_change", f"checking the change of {record.fqdn}", Id=change_id)
                    state = str(change.get("ChangeInfo", {}).get("Status", ""))
                    if state != "INSYNC":
                        status = f"the change of {record.fqdn} is still {state or 'unknown'}"
                        continue
                pending.remove(record)
            if not pending:
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DnsError(
                    f"route53: {status} after {budget.total_seconds():g}s",
                    code="dns-propagation-timeout",
                    hint="check the hosted zone in the AWS console; raise propagation_timeout if Route 53 is slow",
                )
            self._sleep(min(interval, remaining))
            interval = min(interval * 2, _MAX_INTERVAL)
        if self._propagation is not None:
            left = timedelta(seconds=max(1.0, deadline - time.monotonic()))  # at least one round of queries
            self._propagation(records, left)
