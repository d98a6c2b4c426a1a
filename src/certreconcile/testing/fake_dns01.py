"""An in-memory DNS-01 provider with the semantics of the real ones, for tests without a server.

:class:`FakeDns01Provider` passes the same contract suite as the rfc2136, route53 and
cloudflare providers (:mod:`certreconcile.testing.dns01_contract`, run by
``tests/contract/test_dns01.py``). Its ``records`` (name -> values) are the zone;
``wait_until_visible`` looks there. ``authorized=False`` makes every change fail as a
provider with a wrong secret does. ``presented`` and ``cleaned`` log the calls in order,
e.g. to show that an issuer cleans up after a failed order.
"""

from __future__ import annotations

import threading
from datetime import timedelta

from certreconcile.errors import DnsError
from certreconcile.plugins.ports import DnsTxtRecord

__all__ = ["FakeDns01Provider"]


class FakeDns01Provider:
    def __init__(self, *, name: str = "fake", authorized: bool = True) -> None:
        self.name = name
        self.authorized = authorized
        self.records: dict[str, set[str]] = {}
        self.presented: list[DnsTxtRecord] = []
        self.cleaned: list[DnsTxtRecord] = []
        self._lock = threading.Lock()

    def _check_authorized(self, what: str) -> None:
        if not self.authorized:
            raise DnsError(
                f"{what}: the fake DNS provider {self.name} refused the credentials",
                code="dns-auth-failed",
                hint="the fake was made with authorized=False",
            )

    def present(self, record: DnsTxtRecord) -> None:
        self._check_authorized(f"adding the TXT record {record.fqdn}")
        with self._lock:
            self.records.setdefault(record.fqdn, set()).add(record.value)
            self.presented.append(record)

    def cleanup(self, record: DnsTxtRecord) -> None:
        self._check_authorized(f"removing the TXT record {record.fqdn}")
        with self._lock:
            values = self.records.get(record.fqdn)
            if values is not None:
                values.discard(record.value)
                if not values:
                    del self.records[record.fqdn]
            self.cleaned.append(record)

    def values(self, fqdn: str) -> set[str]:
        """What the fake zone holds for ``fqdn`` now (a copy)."""
        with self._lock:
            return set(self.records.get(fqdn, ()))

    def wait_until_visible(self, records: tuple[DnsTxtRecord, ...], timeout: timedelta) -> None:
        """Nothing propagates here: a record is visible at once or never."""
        for record in records:
            if record.value not in self.values(record.fqdn):
                raise DnsError(
                    f"the TXT record {record.fqdn} is not visible at the fake name server {self.name}",
                    code="dns-propagation-timeout",
                )
