"""Bytes that one YAML parser would read differently never lose a declaration.

The landed version before this one let a NUL byte end a file for ``yaml_rs``: the
certificates declared after it vanished, validation passed and ``apply`` retired them.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml_rs

from certreconcile.desired import loader, validate_directory
from certreconcile.desired.yaml_guard import _event_outline, _line_outline, check_outline

ISSUERS = "issuers:\n  ca:\n    local_ca: {lifetime: 30d, common_name: T}\n"


def certificates(*names: str) -> str:
    entries = "".join(f"  - name: {name}\n    domains: [{name}.example.com]\n    issuer: ca\n" for name in names)
    return "certificates:\n" + entries


def diagnostics_of(tmp_path: Path, data: bytes) -> list[tuple[str, int, int, str]]:
    (tmp_path / "issuers.yaml").write_text(ISSUERS)
    (tmp_path / "certs.yaml").write_bytes(data)
    return [(d.code, d.location.line, d.location.column, d.hint) for d in validate_directory(tmp_path)]


def test_a_nul_byte_is_an_error_where_it_stands_not_the_end_of_the_file(tmp_path: Path) -> None:
    text = certificates("shop", "blog")
    broken = text.replace("  - name: blog", "\x00 - name: blog").encode()
    found = diagnostics_of(tmp_path, broken)
    assert [(code, line, column) for code, line, column, _ in found] == [("yaml-forbidden-character", 5, 1)]
    assert found[0][3], "a hint says what to do"


CHARACTERS = [
    pytest.param("a\x01b", 6, 21, id="start-of-heading"),
    pytest.param("a\x07b", 6, 21, id="bell"),
    pytest.param("a\x7fb", 6, 21, id="delete"),
    pytest.param("a\x9bb", 6, 21, id="c1-control"),
    pytest.param("a\x85b", 6, 21, id="next-line-a-break-in-yaml-1.1-only"),
    pytest.param("a\u2028b", 6, 21, id="line-separator"),
    pytest.param("a\u2029b", 6, 21, id="paragraph-separator"),
    pytest.param("a\ufeffb", 6, 21, id="byte-order-mark-in-the-middle"),
    pytest.param("a\ufffeb", 6, 21, id="noncharacter"),
]


@pytest.mark.parametrize(("inserted", "line", "column"), CHARACTERS)
def test_characters_the_parsers_read_differently_are_errors_at_their_position(
    tmp_path: Path, inserted: str, line: int, column: int
) -> None:
    text = certificates("shop", "blog").replace("blog.example.com", f"blog.{inserted}.example.com")
    found = diagnostics_of(tmp_path, text.encode())
    assert [(code, at_line, at_column) for code, at_line, at_column, _ in found][:1] == [
        ("yaml-forbidden-character", line, column)
    ]


def test_invalid_utf8_in_the_middle_is_an_error_at_its_position(tmp_path: Path) -> None:
    data = certificates("shop", "blog").encode().replace(b"blog.example", b"bl\xc3\xa9\xffg.example")
    found = diagnostics_of(tmp_path, data)
    assert [(code, line, column) for code, line, column, _ in found] == [("yaml-encoding", 6, 18)]


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"\xef\xbb\xbf" + certificates("shop").encode(), id="leading-byte-order-mark"),
        pytest.param(certificates("shop").replace("\n", "\r\n").encode(), id="crlf"),
        pytest.param(certificates("shop").replace("[shop", "[\tshop").encode(), id="tab-inside-a-line"),
        pytest.param(certificates("shop").replace("com]", "com]  # caf\xe9 \u00a0").encode(), id="latin"),
    ],
)
def test_ordinary_text_stays_valid(tmp_path: Path, data: bytes) -> None:
    assert diagnostics_of(tmp_path, data) == []


STYLES = [
    pytest.param(certificates("a", "b", "c"), id="block"),
    pytest.param("certificates:\n- name: a\n- name: b\n", id="compact-sequence"),
    pytest.param("certificates: [{name: a}, {name: b}]\n", id="flow"),
    pytest.param("targets:\n  x: {files: {dir: /x}}\n  y:\n    files:\n      dir: /y\n", id="mapping"),
    pytest.param("kms: {local: {}}\npolicy:\n  allowed_domains:\n    - a.example.com\n", id="mixed"),
    pytest.param("a: &x [1, 2]\nb: *x\nc:\n  <<: {k: 1}\n  d: 2\n", id="anchors-and-merge-keys"),
    pytest.param("note: |\n  line one\n  key: not a key\ncertificates: []\n", id="block-scalar"),
    pytest.param("---\ncertificates:\n  - name: a\n...\n", id="document-markers"),
    pytest.param("# only a comment\n", id="empty"),
    pytest.param("certificates:\n  # a comment at the entries' indent\n  - name: a\n", id="comments"),
]


@pytest.mark.parametrize("text", STYLES)
def test_both_readers_agree_with_yaml_rs(text: str) -> None:
    data = yaml_rs.loads(text, parse_datetime=False)
    assert check_outline(text, data) is None
    events, _, _ = _event_outline(text)
    expected = {} if data is None else {k: len(v) if isinstance(v, dict | list) else None for k, v in data.items()}
    assert events == expected
    scanned = _line_outline(text)
    assert scanned is None or scanned == expected  # the line scan may decline, never differ


def test_a_parser_that_drops_an_entry_is_caught_at_the_key() -> None:
    """As if yaml_rs had lost the last certificate: the cross-check names it, at its key."""
    text = "issuers: {}\ncertificates:\n  - name: a\n  - name: b\n"
    dropped = {"issuers": {}, "certificates": [{"name": "a"}]}
    mismatch = check_outline(text, dropped)
    assert mismatch is not None
    assert (mismatch.line, mismatch.column) == (2, 1)
    assert "certificates" in mismatch.message and "2 entries" in mismatch.message and "1 entries" in mismatch.message
    assert check_outline(text, {"issuers": {}}) is not None  # a key lost altogether
    assert check_outline(text + "---\nmore: 1\n", yaml_rs.loads(text)) is not None  # a second document


def test_the_line_scan_declines_rather_than_misreads() -> None:
    assert _line_outline("certificates:\n  - a\n -b\n") is None  # less indented than the entries
    assert _line_outline("certificates:\n  - a\n  b: c\n") is None  # not an entry at the entries' indent
    assert _line_outline("'quoted': 1\n") is None
    assert _line_outline("key: value\n  continued\n") is None


# ---------------------------------------------------------------- what the reader opens


def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe.yaml")
    found = diagnostics_of(tmp_path, certificates("shop").encode())
    assert [(code, line, column) for code, line, column, _ in found] == [("desired-file-not-regular", 1, 1)]


def test_a_device_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("making a device node needs root")
    os.mknod(tmp_path / "zero.yaml", stat.S_IFCHR | 0o600, os.makedev(1, 5))  # /dev/zero: endless
    found = diagnostics_of(tmp_path, certificates("shop").encode())
    assert [code for code, *_ in found] == ["desired-file-not-regular"]


def test_symlinks_may_point_inside_the_directory_but_not_out(tmp_path: Path) -> None:
    repo, outside = tmp_path / "repo", tmp_path / "secret"
    repo.mkdir()
    outside.mkdir()
    (outside / "x.yaml").write_text(certificates("stolen"))
    (repo / "shared").mkdir()
    (repo / "shared" / "certs.yaml").write_text(certificates("shop"))
    (repo / "link.yaml").symlink_to(repo / "shared" / "certs.yaml")
    (repo / "issuers.yaml").write_text(ISSUERS)
    codes = [d.code for d in validate_directory(repo)]
    assert "desired-file-outside" not in codes
    (repo / "escape.yaml").symlink_to(outside / "x.yaml")
    found = [(d.code, d.location.file) for d in validate_directory(repo)]
    assert ("desired-file-outside", "escape.yaml") in found


def test_a_file_over_the_size_cap_is_refused_unread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "MAX_FILE_BYTES", 256)
    found = diagnostics_of(tmp_path, certificates(*[f"c{i}" for i in range(20)]).encode())
    assert [code for code, *_ in found] == ["desired-file-too-large"]
