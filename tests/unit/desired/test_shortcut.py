"""The checker's shortcut for plain certificates (``desired.shortcut``) changes nothing it reports:
every directory of the corpus, and random certificates around plain ones, validate alike with and without it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certreconcile.desired import certificate_checks, shortcut
from certreconcile.desired.checker import Checker
from certreconcile.desired.loader import SourceFile, read_working_tree
from certreconcile.desired.shortcut import PLAIN_NAME_STRICT
from certreconcile.desired.validate import validate_sources
from certreconcile.domain.keys import KeyType
from certreconcile.domain.names import normalize_domain

ROOT = Path(__file__).resolve().parents[2]
DIRECTORIES = [
    *sorted(path for path in (ROOT / "data" / "invalid").iterdir() if path.is_dir()),
    *sorted(path for path in (ROOT / "data" / "valid").iterdir() if path.is_dir()),
    *sorted(path.parent for path in (ROOT.parent / "examples").rglob("desired-state/*.yaml")),
]


def both_ways(files: tuple[SourceFile, ...], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
    results = []
    for taken in (True, False):
        monkeypatch.setattr(Checker, "SHORTCUT", taken)
        declarations, diagnostics, _ = validate_sources(files)
        results.append((declarations.certificates, [str(diagnostic) for diagnostic in diagnostics]))
    return results[0], results[1]


@pytest.mark.parametrize("directory", sorted(set(DIRECTORIES)), ids=lambda path: str(path.relative_to(ROOT.parent)))
def test_the_corpus_validates_alike_with_and_without_the_shortcut(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_shortcut, without = both_ways(read_working_tree(directory).files, monkeypatch)
    assert with_shortcut == without


PLUGINS = {
    "issuers": {
        "internal": {"local_ca": {"common_name": "Test CA", "lifetime": "20d"}},
        "acme": {"acme": {"directory": "https://acme.example.net/directory", "email": "ops@example.com"}},
    },
    "targets": {"deploy": {"files": {"dir": "out/deploy"}}, "edge": {"files": {"dir": "out/edge"}}},
    "dns_providers": {"dns": {"exec": {"program": "./hook.sh"}}},
}
PLAIN = ["a.example.com", "b.example.com", "*.example.com", "a.b.example.com", "example.com", "a.example.org"]
ODD = [
    "A.example.com", "bücher.example.com", "x--y.example.com", "ab--cd.example.com", "xn--invalid.example.com",
    "1.2.3.4", "a.123", "-a.example.com", "a" * 64 + ".example.com", "xn--bcher-kva.example.com",
]  # fmt: skip


def often(plain: st.SearchStrategy[Any], odd: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """``plain`` three times in four: certificates near a plain one, so the shortcut is taken, or nearly."""
    return st.one_of(plain, plain, plain, odd)


@st.composite
def certificate(draw: st.DrawFn, index: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": f"c{index}",
        "domains": draw(
            often(
                st.lists(st.sampled_from(PLAIN), min_size=1, max_size=3, unique=True),
                st.tuples(st.lists(st.sampled_from(PLAIN), max_size=2), st.sampled_from(ODD)).map(
                    lambda names: [*names[0], names[1]]
                ),
            )
        ),
        "issuer": draw(often(st.sampled_from(["internal", "acme"]), st.just("missing"))),
        "targets": draw(
            often(
                st.lists(st.sampled_from(["deploy", "edge"]), max_size=2, unique=True),
                st.one_of(
                    st.lists(st.sampled_from(["deploy", "edge"]), min_size=2, max_size=3),
                    st.lists(st.sampled_from(["deploy", "edge", "nowhere", "agent/t"]), max_size=3),
                ),
            )
        ),
    }
    for key, values in (
        ("renew_before", ["30d", "33%", "5d", "90d", "0d", "150%"]),
        ("key", ["ecdsa-p256", "rsa-2048", "ecdsa-p384"]),
        ("challenge", ["http-01", "dns-01"]),
        ("dns_provider", ["dns", "dns", "other"]),
    ):
        if draw(st.booleans()):
            body[key] = draw(st.sampled_from(values))
    return body


def local_ca_signs_two_key_types(kind: str) -> frozenset[KeyType] | None:
    """No built-in kind limits its key types (``KEY_TYPES``): pretend local_ca does, to check that rule too."""
    return frozenset({KeyType.ECDSA_P256, KeyType.RSA_2048}) if kind == "local_ca" else None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    certificates=st.integers(1, 6).flatmap(lambda n: st.tuples(*(certificate(i) for i in range(n)))),
    policy=st.sampled_from([None, ["example.com", "*.example.com"], ["a.example.com"], ["*.example.org"]]),
    duplicate=st.booleans(),
)
def test_random_certificates_validate_alike_with_and_without_the_shortcut(
    certificates: tuple[dict[str, Any], ...],
    policy: list[str] | None,
    duplicate: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(certificate_checks, "key_types", local_ca_signs_two_key_types)
    monkeypatch.setattr(shortcut, "key_types", local_ca_signs_two_key_types)
    listed = [*certificates, *(certificates[:1] if duplicate else ())]
    document: dict[str, Any] = {**PLUGINS, "certificates": listed}
    if policy is not None:
        document["policy"] = {"allowed_domains": policy}
    files = (SourceFile("certificates.yaml", json.dumps(document, indent=1)),)
    with_shortcut, without = both_ways(files, monkeypatch)
    assert with_shortcut == without


PLAIN_CERTIFICATE: dict[str, Any] = {
    "name": "c", "domains": ["a.example.com"], "issuer": "internal", "targets": ["deploy"]
}  # fmt: skip
NEAR_PLAIN = {
    "plain": {},
    "a name twice": {"domains": ["a.example.com", "a.example.com"]},
    "an address": {"domains": ["1.2.3.4"]},
    "a numeric last label": {"domains": ["a.123"]},
    "bad punycode": {"domains": ["xn--invalid.example.com"]},
    "a reserved label": {"domains": ["ab--cd.example.com"]},
    "upper case": {"domains": ["A.example.com"]},
    "a target twice": {"targets": ["deploy", "deploy"]},
    "acme wildcard, default challenge": {"issuer": "acme", "domains": ["*.example.com"]},
    "acme wildcard over dns-01": {
        "issuer": "acme", "domains": ["*.example.com"], "challenge": "dns-01", "dns_provider": "dns"
    },
    "renewal longer than the lifetime": {"renew_before": "30d"},
    "a key type the issuer cannot sign": {"key": "ecdsa-p384"},
}


@pytest.mark.parametrize("change", sorted(NEAR_PLAIN))
def test_near_plain_certificates_validate_alike_with_and_without_the_shortcut(
    change: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(certificate_checks, "key_types", local_ca_signs_two_key_types)
    monkeypatch.setattr(shortcut, "key_types", local_ca_signs_two_key_types)
    document = {**PLUGINS, "certificates": [{**PLAIN_CERTIFICATE, **NEAR_PLAIN[change]}]}
    with_shortcut, without = both_ways((SourceFile("c.yaml", json.dumps(document)),), monkeypatch)
    assert with_shortcut == without
    assert bool(with_shortcut[0]) != bool(with_shortcut[1])  # declared, or reported


@pytest.mark.parametrize("name", [*PLAIN, *ODD, "a.example.com\n", "*.a-b.example.com", "a.b-1.example.co"])
def test_a_name_the_shortcut_takes_as_it_is_is_normalised_already(name: str) -> None:
    """Both shortcuts (the checker's for names, PlainCertificates) skip normalize_domain for these names."""
    if PLAIN_NAME_STRICT.match(name):
        assert normalize_domain(name) == name
    else:
        assert name in ODD or name.endswith("\n")
