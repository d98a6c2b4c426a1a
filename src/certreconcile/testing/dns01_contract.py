"""The contract every :class:`~certreconcile.plugins.ports.Dns01Provider` and its fake must pass.

Each ``check_*`` function takes a :class:`Dns01Backend` (a factory of the provider plus a way
to read what the DNS side really holds, not through the provider) and raises
``AssertionError`` when the provider breaks the contract. ``tests/contract/test_dns01.py``
runs :data:`CHECKS` against rfc2136 (BIND), route53 (moto), cloudflare (a test API server)
and :class:`~certreconcile.testing.fake_dns01.FakeDns01Provider`.

The contract:

* ``present`` publishes the value; presenting it again changes nothing;
* a second value of the same name coexists with the first (a wildcard and its base name
  share ``_acme-challenge.<base>``);
* ``cleanup`` removes exactly that value, the others stay; cleaning up again is a no-op;
* ``wait_until_visible`` returns for a published value and raises ``DnsError`` within about
  its timeout for an absent name or a value the name does not hold;
* with a wrong secret (TSIG secret, API token, credentials) a change fails with a one-line
  ``DnsError`` that holds no secret and no traceback, and publishes nothing.
"""

from __future__ import annotations

import base64
import functools
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from certreconcile.errors import DnsError
from certreconcile.plugins.ports import Dns01Provider, DnsTxtRecord

__all__ = [
    "CHECKS",
    "Dns01Backend",
    "check_bad_credentials",
    "check_cleanup_removes_exactly_one",
    "check_present_publishes",
    "check_values_coexist",
    "check_wait_until_visible",
    "new_record",
]

#: How long beyond its timeout ``wait_until_visible`` may take to give up (one slow query).
_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class Dns01Backend:
    make_provider: Callable[[], Dns01Provider]
    published: Callable[[str], set[str]]  # the TXT values the DNS side holds for a name, read directly
    zone: str  # records are made below this zone
    make_unauthorized: Callable[[], Dns01Provider] | None = None  # the provider with a wrong secret
    secrets: tuple[str, ...] = ()  # must never appear in an error text
    visible_timeout: timedelta = timedelta(seconds=30)  # enough for a present record to be seen


def new_record(zone: str, value: str | None = None) -> DnsTxtRecord:
    """A fresh challenge name below ``zone`` and an ACME-like value (43 base64url characters)."""
    fqdn = f"_acme-challenge.c{uuid.uuid4().hex[:12]}.{zone}"
    return DnsTxtRecord(fqdn, value or base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("="))


def _expect_dns_error(call: Callable[[], object], failure: str) -> DnsError:
    try:
        call()
    except DnsError as error:
        return error
    raise AssertionError(failure)


def _assert_error_clean(error: DnsError, secrets: tuple[str, ...]) -> None:
    line = error.one_line()
    assert "\n" not in line, line
    assert error.code.startswith("dns-"), error.code
    for text in (line, str(error), repr(error), error.hint):
        assert "Traceback" not in text, text
        for secret in secrets:
            assert secret not in text, "a secret leaked into an error text"


def check_present_publishes(backend: Dns01Backend) -> None:
    provider = backend.make_provider()
    assert isinstance(provider.name, str)
    assert provider.name
    record = new_record(backend.zone)
    assert backend.published(record.fqdn) == set()
    provider.present(record)
    assert backend.published(record.fqdn) == {record.value}
    provider.present(record)  # idempotent
    assert backend.published(record.fqdn) == {record.value}
    provider.cleanup(record)


def check_values_coexist(backend: Dns01Backend) -> None:
    provider = backend.make_provider()
    first = new_record(backend.zone)
    second = DnsTxtRecord(first.fqdn, new_record(backend.zone).value)
    provider.present(first)
    provider.present(second)
    assert backend.published(first.fqdn) == {first.value, second.value}
    provider.present(first)
    assert backend.published(first.fqdn) == {first.value, second.value}
    provider.cleanup(first)
    provider.cleanup(second)


def check_cleanup_removes_exactly_one(backend: Dns01Backend) -> None:
    provider = backend.make_provider()
    first = new_record(backend.zone)
    second = DnsTxtRecord(first.fqdn, new_record(backend.zone).value)
    provider.present(first)
    provider.present(second)
    provider.cleanup(first)
    assert backend.published(first.fqdn) == {second.value}
    provider.cleanup(first)  # already gone: no error, nothing else touched
    assert backend.published(first.fqdn) == {second.value}
    provider.cleanup(second)
    assert backend.published(first.fqdn) == set()
    provider.cleanup(second)
    assert backend.published(first.fqdn) == set()
    never = new_record(backend.zone)
    provider.cleanup(never)  # a name that never existed
    assert backend.published(never.fqdn) == set()


def check_wait_until_visible(backend: Dns01Backend) -> None:
    provider = backend.make_provider()
    present = new_record(backend.zone)
    sibling = DnsTxtRecord(present.fqdn, new_record(backend.zone).value)
    provider.present(present)
    provider.present(sibling)
    try:
        provider.wait_until_visible((present, sibling), backend.visible_timeout)
        short = timedelta(seconds=1)
        absent = new_record(backend.zone)
        wrong_value = DnsTxtRecord(present.fqdn, new_record(backend.zone).value)
        for missing, label in ((absent, "an absent name"), (wrong_value, "a value the name does not hold")):
            started = time.monotonic()
            error = _expect_dns_error(
                functools.partial(provider.wait_until_visible, (present, missing), short),
                f"wait_until_visible returned for {label}",
            )
            elapsed = time.monotonic() - started
            assert elapsed < short.total_seconds() + _GRACE_SECONDS, f"gave up after {elapsed:.1f}s"
            assert missing.fqdn in error.message, error.message
            _assert_error_clean(error, backend.secrets)
    finally:
        provider.cleanup(present)
        provider.cleanup(sibling)


def check_bad_credentials(backend: Dns01Backend) -> None:
    if backend.make_unauthorized is None:
        raise AssertionError("this backend declares no provider with wrong credentials")
    provider = backend.make_unauthorized()
    record = new_record(backend.zone)
    error = _expect_dns_error(lambda: provider.present(record), "present succeeded with a wrong secret")
    _assert_error_clean(error, backend.secrets)
    assert backend.published(record.fqdn) == set()
    error = _expect_dns_error(lambda: provider.cleanup(record), "cleanup succeeded with a wrong secret")
    _assert_error_clean(error, backend.secrets)


CHECKS: tuple[Callable[[Dns01Backend], None], ...] = (
    check_present_publishes,
    check_values_coexist,
    check_cleanup_removes_exactly_one,
    check_wait_until_visible,
    check_bad_credentials,
)
