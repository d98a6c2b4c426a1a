"""Values validate must refuse (issue 13): each with its code, its file:line:col and a hint.

A case names the text its diagnostic points at (``at``): the expected position is where that
text first occurs in the file, so the table stays readable and the position is still exact.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from certreconcile.desired import validate_directory
from helpers import require_binary

ISSUERS = "issuers:\n  ca: {local_ca: {}}\n"
TARGETS = "targets:\n  out: {files: {dir: /srv/certs/out}}\n"
CERT = "certificates:\n  - {name: w, domains: [w.example.com], issuer: ca, targets: [out]}\n"


def doc(issuers: str = ISSUERS, targets: str = TARGETS, certs: str = CERT) -> str:
    return issuers + targets + certs


def target(body: str) -> str:
    return f"targets:\n  out:\n    {body}\n"


ACME = "issuers:\n  ca:\n    acme:\n      directory: https://acme.example/dir\n"

CASES = [
    # (a) reserved LDH labels ("??--" that are not xn--)
    pytest.param(doc(certs=CERT.replace("[w.example.com]", "[w.example.com, ab--cd.example.com]")),
                 "domain-reserved-label", "ab--cd", id="a-reserved-label"),
    pytest.param(doc(certs=CERT.replace("[w.example.com]", "['*.x1--y.example.com']")),
                 "domain-reserved-label", "'*.x1--y", id="a-reserved-label-after-wildcard"),
    # (c) durations so large they overflow
    pytest.param(doc(issuers="issuers:\n  ca: {local_ca: {lifetime: 99999999999999999999d}}\n"),
                 "duration-too-long", "99999999999999999999d", id="c-lifetime-overflows"),
    pytest.param(doc(issuers="issuers:\n  ca: {local_ca: {ca_lifetime: 36501d}}\n"),
                 "duration-too-long", "36501d", id="c-ca-lifetime-over-100-years"),
    pytest.param(doc(issuers=ACME + "      order_timeout: 9999999999w\n"),
                 "duration-too-long", "9999999999w", id="c-acme-order-timeout"),
    pytest.param(doc(targets=target("files: {dir: /srv/o}\n    verify_timeout: 5000000000s")),
                 "duration-too-long", "5000000000s", id="c-verify-timeout"),
    pytest.param("kms: {local: {}, cache: {max_age: 99999999999999m}}\n" + doc(),
                 "duration-too-long", "99999999999999m", id="c-kms-cache-max-age"),
    # (d) listen ports outside 1-65535
    pytest.param(doc(issuers=ACME + "      http01: {standalone: {listen: '0.0.0.0:65536'}}\n"),
                 "invalid-port", "'0.0.0.0:65536'", id="d-standalone-listen-too-high"),
    pytest.param(doc(issuers=ACME + "      http01: {standalone: {listen: '[::]:0'}}\n"),
                 "invalid-port", "'[::]:0'", id="d-standalone-listen-zero"),
    pytest.param(doc(targets=target("haproxy: {cert_dir: /srv/h, runtime_api: '127.0.0.1:99999'}")),
                 "invalid-port", "'127.0.0.1:99999'", id="d-haproxy-runtime-api"),
    # (e) lifetimes shorter than a sane minimum (1h)
    pytest.param(doc(issuers="issuers:\n  ca: {local_ca: {lifetime: 59m}}\n"),
                 "lifetime-too-short", "59m", id="e-local-ca-lifetime"),
    pytest.param(doc(issuers="issuers:\n  ca: {local_ca: {lifetime: 10s}}\n"),
                 "lifetime-too-short", "10s", id="e-local-ca-seconds"),
    pytest.param(doc(issuers="issuers:\n  ca: {vault_pki: {url: 'https://v:8200', role: r, ttl: 5m}}\n"),
                 "lifetime-too-short", "5m}", id="e-vault-pki-ttl"),
    # (f) the same target twice in one certificate
    pytest.param(doc(certs=CERT.replace("targets: [out]", "targets: [out, out]")),
                 "duplicate-target", "out]", id="f-duplicate-target"),
    # (g) strings are not booleans (strict bools)
    *(
        pytest.param(doc(targets=target(f"webhook: {{url: 'https://h', secret_env: S, allow_link_local: {text}}}")),
                     "schema-invalid-type", text + "}", id=f"g-bool-from-{text.strip(chr(39)) or 'empty'}")
        for text in ("yes", "'true'", "'1'", "on", "'false'")
    ),
    # (h) blank or unbalanced commands
    pytest.param(doc(targets=target("files: {dir: /srv/o, reload_command: ''}")),
                 "invalid-command", "''", id="h-empty-command"),
    pytest.param(doc(targets=target("files: {dir: /srv/o, reload_command: '   '}")),
                 "invalid-command", "'   '", id="h-blank-command"),
    pytest.param(doc(targets=target("files: {dir: /srv/o, reload_command: \"systemctl 'reload nginx\"}")),
                 "invalid-command", "\"systemctl", id="h-unbalanced-quote"),
    pytest.param(doc(targets=target("nginx: {cert_dir: /srv/n, test_command: 'nginx -t \\'}")),
                 "invalid-command", "'nginx -t", id="h-trailing-escape"),
    pytest.param(doc(targets=target("haproxy: {cert_dir: /srv/h, reload_command: '\"'}")),
                 "invalid-command", "'\"'", id="h-lone-double-quote"),
    # (i) NUL in paths
    pytest.param(doc(targets=target('files: {dir: "/srv/o\\0ut"}')),
                 "path-has-nul", '"/srv/o', id="i-nul-in-target-dir"),
    pytest.param(doc(issuers=ACME + '      ca_bundle: "/etc/ca\\0.pem"\n'),
                 "path-has-nul", '"/etc/ca', id="i-nul-in-ca-bundle"),
    pytest.param("kms: {local: {key_file: \"k\\0\"}}\n" + doc(),
                 "path-has-nul", '"k', id="i-nul-in-kms-key-file"),
    # (j) two targets writing one directory
    pytest.param(doc(targets="targets:\n  out: {files: {dir: /srv/certs}}\n  two: {envoy: {sds_dir: /srv/certs/}}\n"),
                 "duplicate-target-dir", "/srv/certs/}", id="j-same-dir-two-kinds"),
    pytest.param(doc(targets="targets:\n  out: {files: {dir: certs}}\n  two: {nginx: {cert_dir: ./x/../certs}}\n"),
                 "duplicate-target-dir", "./x/../certs", id="j-same-relative-dir"),
]


@pytest.mark.parametrize(("text", "code", "at"), CASES)
def test_refused_with_code_position_and_hint(tmp_path: Path, text: str, code: str, at: str) -> None:
    (tmp_path / "c.yaml").write_text(text)
    diagnostics = validate_directory(tmp_path)
    assert [d.code for d in diagnostics] == [code], [str(d) for d in diagnostics]
    before = text[: text.index(at)]
    expected = f"c.yaml:{before.count(chr(10)) + 1}:{len(before) - (before.rfind(chr(10)) + 1) + 1}"
    assert str(diagnostics[0].location) == expected
    assert diagnostics[0].hint


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(doc(certs=CERT.replace("[w.example.com]", "[xn--bcher-kva.example, a-b--c.example.com]")),
                     id="a-xn-and-later-hyphens-are-fine"),
        pytest.param(doc(certs=CERT.replace("[w.example.com]", f"[{'a' * 60}.example.com]")),
                     id="b-first-domain-over-64-characters"),
        pytest.param(doc(issuers="issuers:\n  ca: {local_ca: {lifetime: 1h, ca_lifetime: 36500d}}\n"),
                     id="ce-the-limits-themselves"),
        pytest.param(doc(targets=target("webhook: {url: 'https://h', secret_env: S, allow_link_local: true}")),
                     id="g-a-real-boolean"),
        pytest.param(doc(targets=target("files: {dir: /srv/o, reload_command: \"sh -c 'kill -HUP 1'\"}")),
                     id="h-balanced-quotes"),
        pytest.param(doc(targets="targets:\n  out: {files: {dir: /srv/a}}\n  two: {files: {dir: /srv/a/b}}\n"),
                     id="j-nested-is-not-the-same"),
        pytest.param(doc(targets="targets:\n  out: {haproxy: {cert_dir: /srv/h, runtime_api: 'unix:/run/h.sock'}}\n"),
                     id="d-unix-socket"),
    ],
)
def test_accepted(tmp_path: Path, text: str) -> None:
    (tmp_path / "c.yaml").write_text(text)
    assert [str(d) for d in validate_directory(tmp_path)] == []


# ---------------------------------------------------------------- (k) target directories in the repository


def git_repo(root: Path, ignore: str = "") -> Path:
    require_binary("git")
    subprocess.run(["git", "init", "-q", str(root)], check=True)
    if ignore:
        (root / ".gitignore").write_text(ignore)
    desired = root / "certs"
    desired.mkdir()
    return desired


@pytest.mark.parametrize(
    ("ignore", "directory", "refused"),
    [
        pytest.param("", "out", True, id="relative-inside"),
        pytest.param("", "{tmp}/repo/deploy", True, id="beside-the-desired-dir-still-in-the-repository"),
        pytest.param("", ".certreconcile/out", True, id="hidden-but-not-ignored"),
        pytest.param(".certreconcile/\n", ".certreconcile/out", False, id="git-ignored"),
        pytest.param("out/\n", "out", False, id="git-ignored-dir-itself"),
        pytest.param("", "{tmp}/elsewhere", False, id="outside-the-repository"),
    ],
)
def test_target_dir_inside_the_repository(tmp_path: Path, ignore: str, directory: str, refused: bool) -> None:
    desired = git_repo(tmp_path / "repo", ignore)
    directory = directory.format(tmp=tmp_path)  # a relative "../x" is refused as target-dir-escapes
    text = doc(targets=f"targets:\n  out: {{files: {{dir: {directory}}}}}\n")
    (desired / "c.yaml").write_text(text)
    diagnostics = validate_directory(desired)
    if not refused:
        assert diagnostics == []
        return
    assert [d.code for d in diagnostics] == ["target-dir-in-repository"]
    before = text[: text.index(directory + "}")]
    assert str(diagnostics[0].location) == f"c.yaml:{before.count(chr(10)) + 1}:{len(before.rsplit(chr(10), 1)[1]) + 1}"
    assert "ignore" in diagnostics[0].hint


@pytest.mark.parametrize("directory", ["../deploy", "../../elsewhere", "a/../../b", ".."])
def test_a_relative_target_dir_may_not_climb_out(tmp_path: Path, directory: str) -> None:
    desired = git_repo(tmp_path / "repo", "")
    (desired / "c.yaml").write_text(doc(targets=f"targets:\n  out: {{files: {{dir: '{directory}'}}}}\n"))
    assert [d.code for d in validate_directory(desired)] == ["target-dir-escapes"]


def test_target_dir_check_needs_no_repository(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(doc(targets="targets:\n  out: {files: {dir: out}}\n"))
    assert validate_directory(tmp_path) == []
