"""validate.py: paths, fast paths equal to the slow ones, table cases."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from certreconcile.desired import validate_directory
from certreconcile.desired.certificate_checks import _PLAIN_NAME
from certreconcile.desired.validate import format_path
from certreconcile.domain.names import DomainNameError, matches_allowed, normalize_domain


@pytest.mark.parametrize(
    ("path", "text"),
    [
        pytest.param((), "(top level)", id="empty"),
        pytest.param(("certificates", 3, "domains", 1), "certificates[3].domains[1]", id="list"),
        pytest.param(("issuers", "ca", "local_ca"), "issuers.ca.local_ca", id="mapping"),
        pytest.param(("issuers", "Bad Name"), "issuers['Bad Name']", id="odd-key"),
    ],
)
def test_format_path(path: tuple[str | int, ...], text: str) -> None:
    assert format_path(path) == text


labels = st.from_regex(r"\A[a-z0-9*](?:[a-z0-9_.*-]{0,8})\Z")


@given(st.lists(labels, min_size=1, max_size=4).map(".".join))
def test_plain_name_fast_path_agrees_with_normalize_domain(name: str) -> None:
    fast = bool(_PLAIN_NAME.match(name)) and "--" not in name and not name.rpartition(".")[2].isdigit()
    if fast:
        assert normalize_domain(name) == name


@given(st.sampled_from(["a.example.com", "example.com", "x.a.example.com", "example.org", "aexample.com"]))
def test_allowed_shortcut_agrees_with_matches_allowed(name: str) -> None:
    allowed = ("*.example.com", "example.org")
    exact = frozenset(p for p in allowed if not p.startswith("*."))
    suffixes = tuple(p[1:] for p in allowed if p.startswith("*."))
    assert (name in exact or name.endswith(suffixes)) == matches_allowed(name, allowed)


HEADER = "issuers: {ca: {local_ca: {}}}\n"
W = "certificates:\n  - {name: w, "


@pytest.mark.parametrize(
    ("body", "codes"),
    [
        pytest.param("certificates: []\n", [], id="no-certificates"),
        pytest.param(W + "domains: ['*.a.example.com'], issuer: ca}\n", [], id="wildcard-local-ca-without-challenge"),
        pytest.param(
            W + "domains: ['*.a.example.com'], issuer: ca, challenge: http-01}\n",
            ["wildcard-needs-dns01"],
            id="wildcard-explicit-http01",
        ),
        pytest.param(W + "domains: [bücher.example], issuer: ca}\n", [], id="idn"),
        pytest.param(W + "domains: [a.example.com], issuer: ca, key: rsa-3072}\n", [], id="local-ca-signs-rsa"),
        pytest.param(
            W + "domains: ['a..example.com', ' b.example.com'], issuer: ca}\n",
            ["domain-empty-label", "domain-whitespace"],
            id="every-domain-reported",
        ),
        pytest.param(
            "policy: {allowed_domains: []}\n" + W + "domains: [a.example.org], issuer: ca}\n",
            [],
            id="empty-policy-allows-all",
        ),
        pytest.param(
            W + "domains: [a.example.com], issuer: ca, renew_before: 89d}\n", [], id="renew-before-below-lifetime"
        ),
        pytest.param(
            W + "domains: [a.example.com], issuer: ca, renew_before: 90d}\n",
            ["renew-before-too-long"],
            id="renew-before-equals-lifetime",
        ),
        pytest.param(
            W + "domains: [a.example.com], issuer: ca, challenge: no}\n",
            ["schema-invalid-value"],
            id="yaml-1.2-no-is-a-string",
        ),
    ],
)
def test_table(tmp_path: Path, body: str, codes: list[str]) -> None:
    (tmp_path / "d.yaml").write_text(HEADER + body)
    assert [d.code for d in validate_directory(tmp_path)] == codes


def test_domain_error_codes_pass_through(tmp_path: Path) -> None:
    with pytest.raises(DomainNameError) as raised:
        normalize_domain("a..b.com")
    (tmp_path / "d.yaml").write_text(HEADER + W + "domains: ['a..b.com'], issuer: ca}\n")
    assert [d.code for d in validate_directory(tmp_path)] == [raised.value.code]
