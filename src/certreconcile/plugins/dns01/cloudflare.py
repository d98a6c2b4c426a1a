"""DNS-01 through the Cloudflare API v4 (DNS records), with an API token.

Each TXT value is its own Cloudflare record: ``present`` creates one (an identical one
already there is fine), ``cleanup`` deletes the records of that name holding exactly that
value. Without ``zone_id`` the zone is found by name (``GET /zones?name=``), walking up the
record's name. ``wait_until_visible`` then asks the authoritative name servers.

The token comes from the environment variable the declaration names, at the first call, and
is only ever sent in the ``Authorization`` header: error texts name the HTTP status and
Cloudflare's error code, never the token. httpx is imported here only.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx

from certreconcile.errors import DnsError
from certreconcile.plugins.dns01.cloudflare_config import CloudflareConfig
from certreconcile.plugins.dns01.propagation import PropagationWaiter
from certreconcile.plugins.kms._redact import display_url
from certreconcile.plugins.ports import DnsTxtRecord

__all__ = ["CloudflareProvider"]

_TTL = 120  # Cloudflare's minimum for non-enterprise zones
_IDENTICAL_RECORD = 81058  # "An identical record already exists."
_RECORD_GONE = 81044  # "Record does not exist."


class CloudflareProvider:
    """One declared ``cloudflare`` provider."""

    def __init__(
        self,
        name: str,
        config: CloudflareConfig,
        *,
        env: Mapping[str, str],
        propagation: PropagationWaiter,
        ca_bundle: Path | None = None,
        transport: httpx.BaseTransport | None = None,  # tests: an in-memory transport
        timeout: float = 15.0,
    ) -> None:
        self.name = name
        self._config = config
        self._env = env
        self._propagation = propagation
        self._ca_bundle = ca_bundle
        self._transport = transport
        self._timeout = timeout
        self._client: httpx.Client | None = None
        self._zones: dict[str, str] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ HTTP

    def _token(self) -> str:
        variable = self._config.api_token_env
        token = (self._env.get(variable) or "").strip()
        if not token:
            raise DnsError(
                f"the environment variable {variable} (API token of the DNS provider {self.name}) is not set",
                code="dns-credentials-missing",
                hint=f"export {variable}=<a Cloudflare API token with Zone.DNS:Edit>",
            )
        return token

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                verify: ssl.SSLContext | bool = True
                if self._ca_bundle is not None:
                    try:
                        verify = ssl.create_default_context(cafile=str(self._ca_bundle))
                    except (OSError, ssl.SSLError) as exc:
                        raise DnsError(
                            f"the ca_bundle {self._ca_bundle} of the DNS provider {self.name} cannot be read",
                            code="dns-config-invalid",
                        ) from exc
                self._client = httpx.Client(
                    base_url=self._config.api_base.rstrip("/") + "/",
                    headers={"Authorization": f"Bearer {self._token()}", "Accept": "application/json"},
                    verify=verify,
                    timeout=self._timeout,
                    follow_redirects=False,
                    transport=self._transport,
                )
            return self._client

    def _request(
        self, method: str, path: str, what: str, *, ok_codes: frozenset[int] = frozenset(), **arguments: Any
    ) -> Any:
        """The ``result`` of a Cloudflare API call; None when Cloudflare answers one of ``ok_codes``."""
        where = display_url(self._config.api_base)
        try:
            response = self._http().request(method, path.lstrip("/"), **arguments)
        except httpx.HTTPError as exc:
            raise DnsError(
                f"cloudflare {what}: cannot reach {where} ({type(exc).__name__})",
                code="dns-server-unreachable",
                hint="check the network, api_base and ca_bundle; retry later",
            ) from exc
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and body.get("success") is True and response.is_success:
            return body.get("result")
        errors = body.get("errors") if isinstance(body, dict) else None
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        error_code = first.get("code")
        if error_code in ok_codes:
            return None
        detail = f"HTTP {response.status_code}"
        if error_code is not None:
            detail += f", error {error_code}"
        message = " ".join(str(first.get("message", "")).split())[:160]
        if message:
            detail += f": {message}"
        detail = detail.replace(self._token(), "<token>")
        if response.status_code in (401, 403):
            raise DnsError(
                f"cloudflare {what}: the API token in {self._config.api_token_env} was refused ({detail})",
                code="dns-auth-failed",
                hint="use a token with Zone.DNS:Edit (and Zone.Zone:Read without zone_id) on this zone",
            )
        raise DnsError(f"cloudflare {what} failed at {where} ({detail})", code="dns-provider-error")

    # ------------------------------------------------------------------ records

    def _zone_id(self, fqdn: str) -> str:
        if self._config.zone_id:
            return self._config.zone_id
        labels = fqdn.rstrip(".").split(".")
        for start in range(len(labels) - 1):
            candidate = ".".join(labels[start:])
            with self._lock:
                known = self._zones.get(candidate)
            if known is not None:
                return known
            zones = self._request("GET", "zones", f"finding the zone of {fqdn}", params={"name": candidate})
            for zone in zones if isinstance(zones, list) else []:
                if isinstance(zone, dict) and zone.get("name") == candidate and zone.get("id"):
                    zone_id = str(zone["id"])
                    with self._lock:
                        self._zones[candidate] = zone_id
                    return zone_id
        raise DnsError(
            f"no Cloudflare zone visible to the token holds {fqdn}",
            code="dns-zone-not-found",
            hint="set cloudflare.zone_id, or give the token Zone.Zone:Read on the zone",
        )

    def _records(self, zone_id: str, record: DnsTxtRecord) -> list[dict[str, Any]]:
        found = self._request(
            "GET",
            f"zones/{zone_id}/dns_records",
            f"listing the TXT records of {record.fqdn}",
            params={"type": "TXT", "name": record.fqdn, "per_page": "100"},
        )
        return [
            item
            for item in (found if isinstance(found, list) else [])
            if isinstance(item, dict)
            and str(item.get("name", "")).lower() == record.fqdn
            and str(item.get("content", "")).strip('"') == record.value
        ]

    # ------------------------------------------------------------------ Dns01Provider

    def present(self, record: DnsTxtRecord) -> None:
        zone_id = self._zone_id(record.fqdn)
        if self._records(zone_id, record):
            return
        self._request(
            "POST",
            f"zones/{zone_id}/dns_records",
            f"adding a TXT record to {record.fqdn}",
            ok_codes=frozenset({_IDENTICAL_RECORD}),
            json={"type": "TXT", "name": record.fqdn, "content": record.value, "ttl": _TTL},
        )

    def cleanup(self, record: DnsTxtRecord) -> None:
        zone_id = self._zone_id(record.fqdn)
        for item in self._records(zone_id, record):
            self._request(
                "DELETE",
                f"zones/{zone_id}/dns_records/{item['id']}",
                f"removing a TXT record of {record.fqdn}",
                ok_codes=frozenset({_RECORD_GONE}),
            )

    def check(self) -> str:
        """``certreconcile check``: one read-only call with the token (the declared zone's records, else the
        zones the token sees); a refused token fails here."""
        if self._config.zone_id:
            self._request("GET", f"zones/{self._config.zone_id}/dns_records", "checking the API token",
                          params={"per_page": 1})  # fmt: skip
        else:
            self._request("GET", "zones", "checking the API token", params={"per_page": 1})
        return f"the API token in {self._config.api_token_env} was accepted"

    def wait_until_visible(self, records: tuple[DnsTxtRecord, ...], timeout: timedelta) -> None:
        self._propagation.wait(records, timeout)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None
