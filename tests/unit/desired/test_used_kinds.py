"""Documents are validated with a model of the kinds they use: same results, same errors as the complete model."""

from __future__ import annotations

from pathlib import Path

from certreconcile.desired import load_desired, validate_directory
from certreconcile.desired.kinds import kind_names
from certreconcile.desired.validate import used_kinds

CERTIFICATES = "certificates:\n  - name: shop\n    domains: [shop.example.test]\n    issuer: ca\n    targets: [web]\n"
PLUGINS = (
    "issuers:\n  ca:\n    local_ca: {common_name: test CA}\n"
    "targets:\n  web:\n    files: {dir: /srv/tls/web}\n"
    'policy:\n  allowed_domains: ["*.example.test"]\n'
)


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir()
    for name, text in files.items():
        (directory / name).write_text(text)
    return directory


def test_used_kinds_collects_every_entry_key_whatever_the_shape() -> None:
    data = {
        "kms": {"local": {}},
        "issuers": {"ca": {"local_ca": {}}, "odd": ["not", "a", "map"]},
        "targets": {"web": {"files": {}, "verify": {}}},
        "dns_providers": "not a map",
        "certificates": [{"name": "x"}],
    }
    assert used_kinds(data) == {"local", "local_ca", "files", "verify"}
    assert used_kinds(["a", "list"]) == frozenset()
    assert used_kinds(None) == frozenset()


def test_a_later_file_with_more_kinds_validates(tmp_path: Path) -> None:
    webhook = "targets:\n  hook:\n    webhook: {url: 'https://hooks.example.test/x', secret_env: HOOK_SECRET}\n"
    directory = write(tmp_path / "d", {"a.yaml": CERTIFICATES, "b.yaml": PLUGINS, "c.yaml": webhook})
    desired = load_desired(directory)
    assert {name: spec.kind for name, spec in desired.targets.items()} == {"web": "files", "hook": "webhook"}
    assert desired.issuers["ca"].kind == "local_ca"


def test_an_unknown_kind_is_reported_with_every_installed_kind(tmp_path: Path) -> None:
    directory = write(tmp_path / "d", {"a.yaml": CERTIFICATES, "b.yaml": PLUGINS,
                                       "c.yaml": "targets:\n  typo:\n    filez: {dir: /srv/x}\n"})  # fmt: skip
    [diagnostic] = validate_directory(directory)
    assert (diagnostic.location.file, diagnostic.location.line) == ("c.yaml", 3)
    assert diagnostic.code == "schema-unknown-field"
    assert f"one kind key, one of: {', '.join(kind_names('targets'))}" in diagnostic.hint


def test_an_entry_without_a_kind_lists_every_installed_kind(tmp_path: Path) -> None:
    directory = write(tmp_path / "d", {"a.yaml": CERTIFICATES, "b.yaml": PLUGINS,
                                       "c.yaml": "issuers:\n  empty: {}\n"})  # fmt: skip
    messages = [diagnostic.message for diagnostic in validate_directory(directory)]
    assert any(", ".join(kind_names("issuers")) in message for message in messages), messages
