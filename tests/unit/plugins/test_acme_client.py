"""The ACME client's pure parts: polling delays, Retry-After, ARI ids, newOrder payloads, chains."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from acme import messages
from acme.client import _renewal_info_path_component
from cryptography import x509

from certreconcile.crypto.keys import build_csr, generate_private_key
from certreconcile.domain.keys import KeyType
from certreconcile.plugins.issuers.acme.client import (
    NewOrderWithReplaces,
    Poller,
    ari_certificate_id,
    parse_retry_after,
)
from certreconcile.plugins.issuers.acme.order import split_chain
from certreconcile.plugins.issuers.local_ca import LocalCaIssuer
from certreconcile.plugins.issuers.local_ca_config import LocalCaConfig
from certreconcile.plugins.ports import IssueRequest
from certreconcile.testing.fake_kms import FakeKms
from certreconcile.testing.fake_repository import InMemoryStore

NOW = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    assert parse_retry_after("7", NOW) == NOW + timedelta(seconds=7)
    assert parse_retry_after("Sat, 28 Nov 2026 12:01:00 GMT", NOW) == NOW + timedelta(minutes=1)
    assert parse_retry_after(None, NOW) is None
    assert parse_retry_after("soon", NOW) is None


def test_polls_start_short_double_and_honour_retry_after() -> None:
    slept: list[float] = []
    poller = Poller(sleep=slept.append, first=0.005, ceiling=2.0)
    far = time.monotonic() + 3600
    for attempt in range(12):
        poller.wait(attempt, None, NOW, far)
    assert slept[:3] == [0.005, 0.01, 0.02]
    assert max(slept) == 2.0  # capped
    slept.clear()
    poller.wait(0, NOW + timedelta(seconds=3), NOW, far)
    assert slept == [3.0]  # the CA asked for longer: it wins
    slept.clear()
    poller.wait(0, NOW + timedelta(seconds=30), NOW, time.monotonic() + 1)
    assert 0 < slept[0] <= 1.0  # never past the order's deadline


def issued_pem() -> str:
    issuer = LocalCaIssuer("ca", LocalCaConfig(), InMemoryStore(), FakeKms())
    key = generate_private_key(KeyType.ECDSA_P256)
    domains = ("shop.example.com",)
    request = IssueRequest(
        name="shop", domains=domains, key_type=KeyType.ECDSA_P256, csr_pem=build_csr(key, domains), now=NOW
    )
    issued = issuer.issue(request)
    return issued.cert_pem + issued.chain_pem


def test_ari_certificate_id_matches_certbots() -> None:
    pem = issued_pem()
    cert = x509.load_pem_x509_certificate(split_chain(pem)[0].encode())
    assert ari_certificate_id(split_chain(pem)[0]) == _renewal_info_path_component(cert)


def test_new_order_carries_replaces_and_profile_only_when_set() -> None:
    identifiers = [messages.Identifier(typ=messages.IDENTIFIER_FQDN, value="shop.example.com")]
    plain = json.loads(NewOrderWithReplaces(identifiers=identifiers, profile=None, replaces=None).json_dumps())
    assert set(plain) == {"identifiers"}
    renewal = json.loads(
        NewOrderWithReplaces(identifiers=identifiers, profile="shortlived", replaces="a.b").json_dumps()
    )
    assert renewal["replaces"] == "a.b"
    assert renewal["profile"] == "shortlived"


def test_a_chain_is_split_into_leaf_and_the_rest() -> None:
    pem = issued_pem()
    leaf, chain = split_chain(pem)
    assert leaf.count("BEGIN CERTIFICATE") == 1
    assert chain.count("BEGIN CERTIFICATE") == pem.count("BEGIN CERTIFICATE") - 1
    with pytest.raises(Exception, match="no certificate"):
        split_chain("garbage")
