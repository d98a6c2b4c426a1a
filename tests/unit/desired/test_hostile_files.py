"""Hostile inputs that cannot live in tests/data/invalid: huge files, hostile file names; the rules behind
the hostile corpus (homographs, invisible characters, numeric hosts) checked value by value."""

from __future__ import annotations

import ipaddress
import subprocess
import tracemalloc
from pathlib import Path

import pytest

from certreconcile.desired import validate_directory
from certreconcile.desired.loader import MAX_FILE_BYTES
from certreconcile.domain.addresses import address_refusal, host_address, is_legacy_numeric_host
from certreconcile.domain.names import DomainNameError, normalize_domain
from certreconcile.errors import TargetError
from certreconcile.plugins.targets.haproxy import HaproxyRuntimeApi
from helpers import require_binary

VALID = "certificates: []\n"


def test_a_file_over_the_cap_is_refused_unread_in_bounded_memory(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as handle:  # sparse: 33 MiB without writing them
        handle.write(b"certificates:\n")
        handle.truncate(MAX_FILE_BYTES + (1 << 20))
    (tmp_path / "ok.yaml").write_text("issuers: {}\n")
    tracemalloc.start()
    try:
        diagnostics = validate_directory(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [(str(d.location), d.code) for d in diagnostics] == [("huge.yaml:1:1", "desired-file-too-large")]
    assert peak < MAX_FILE_BYTES + (8 << 20)  # read at most cap + 1 bytes, never decoded or parsed


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("evil\nc.yaml:1:1: error[fake].yaml", "evil\\x0ac.yaml:1:1: error[fake].yaml"),
        ("esc\x1b[2Kclear.yaml", "esc\\x1b[2Kclear.yaml"),
        ("rlo\u202elmay.yaml", "rlo\\x202elmay.yaml"),
    ],
)
def test_a_file_name_with_control_characters_is_refused_and_shown_escaped(
    tmp_path: Path, name: str, shown: str
) -> None:
    (tmp_path / name).write_text(VALID)
    diagnostics = validate_directory(tmp_path)
    assert [(str(d.location), d.code) for d in diagnostics] == [(f"{shown}:1:1", "desired-file-name")]
    assert "\n" not in str(diagnostics[0]) and "\x1b" not in str(diagnostics[0])


def test_a_committed_file_name_with_a_line_break_is_refused_at_a_git_ref(tmp_path: Path) -> None:
    require_binary("git")
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a\nb.yaml").write_text(VALID)

    def git(*args: str) -> None:
        subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)

    git("init", "-q")
    git("add", "-A")
    git("-c", "user.email=t@example.com", "-c", "user.name=t", "commit", "-qm", "x")
    diagnostics = validate_directory(repo, ref="HEAD")
    assert [(str(d.location), d.code) for d in diagnostics] == [("a\\x0ab.yaml:1:1", "desired-file-name")]


@pytest.mark.parametrize(
    ("domain", "code"),
    [
        ("ex\u0430mple.com", "domain-mixed-scripts"),  # Cyrillic a
        ("g\u03bf\u03bfgle.com", "domain-mixed-scripts"),  # Greek omicron
        ("xn--exmple-4nf.com", "domain-mixed-scripts"),  # the same, as punycode
        ("\u0430\u03b1.example.com", "domain-mixed-scripts"),  # Cyrillic + Greek
        ("sh\u200bop.example.com", "domain-invisible-character"),
        ("sh\u00adop.example.com", "domain-invisible-character"),
        ("a\u3002\u3002b.com", "domain-empty-label"),  # ideographic full stops are dots (UTS #46)
    ],
)
def test_homographs_and_invisible_characters_are_refused(domain: str, code: str) -> None:
    with pytest.raises(DomainNameError) as raised:
        normalize_domain(domain)
    assert raised.value.code == code


@pytest.mark.parametrize(
    ("domain", "normalised"),
    [
        ("m\u00fcnchen.de", "xn--mnchen-3ya.de"),
        ("\u043f\u0440\u0438\u043c\u0435\u0440.\u0440\u0444", "xn--e1afmkfd.xn--p1ai"),  # whole-script Cyrillic
        ("\u0430\u0440\u0440\u04cf\u0435.com", "xn--80ak6aa92e.com"),  # a whole-script confusable: IDNA allows it
        ("\u3072\u3089\u304cabc\u6f22\u5b57.jp", "xn--abc-o73bvh8e4903afd7a.jp"),  # Latin + Han + kana
        ("shop.example\u3002com", "shop.example.com"),
        ("\u0915\u094d\u200d\u0937.example.com", "xn--11b2ezcw70k.example.com"),  # ZWJ after virama (CONTEXTJ)
    ],
)
def test_single_script_and_allowed_mixes_are_accepted(domain: str, normalised: str) -> None:
    assert normalize_domain(domain) == normalised


@pytest.mark.parametrize(
    ("host", "legacy"),
    [
        ("2130706433", True), ("0x7f000001", True), ("0177.0.0.1", True), ("127.1", True), ("0xa9.0xfe.1", True),
        ("127.0.0.1", False), ("10.0.0.1", False), ("hooks.example.com", False), ("1e100.net", False),
        ("::1", False), ("123.example", False),
    ],
)
def test_legacy_numeric_hosts(host: str, legacy: bool) -> None:
    assert is_legacy_numeric_host(host) is legacy


def test_host_address_reads_literals_with_zones() -> None:
    assert host_address("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    assert host_address("hooks.example.com") is None
    address = host_address("169.254.169.254")
    assert address is not None and address_refusal(address) == "a cloud metadata address"


@pytest.mark.parametrize(
    "line", ["set ssl cert /certs;shutdown frontend www/a.pem", "show ssl cert /c\nshutdown x", "x \\y"]
)
def test_the_haproxy_runtime_api_refuses_a_line_with_separators_unsent(line: str) -> None:
    """A cert_dir reaches `set ssl cert <path>`: a ';' or line break would be a second HAProxy command."""
    api = HaproxyRuntimeApi("127.0.0.1:9")  # nothing listens: sending would fail with OSError instead
    with pytest.raises(TargetError) as raised:
        api.command(line)
    assert raised.value.code == "target-runtime-api-unsafe"
