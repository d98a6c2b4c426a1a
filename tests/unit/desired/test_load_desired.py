"""load_desired: the frozen model, digest, defaults, git refs, locations."""

from __future__ import annotations

from pathlib import Path

import git
import pytest

from certreconcile.desired import Diagnostic, load_desired, plugin_fingerprint, validate_directory
from certreconcile.desired.model import SourceLocation
from certreconcile.domain.keys import KeyType
from certreconcile.errors import ConfigError, DesiredStateError
from certreconcile.plugins.issuers.local_ca_config import LocalCaConfig
from certreconcile.plugins.kms.local_config import LocalKmsConfig

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "desired-state"

PLUGINS = """\
issuers:
  ca:
    local_ca: {lifetime: 30d, common_name: T}
targets:
  b: {files: {dir: out-b}}
  a: {files: {dir: out-a, reload_command: null}, verify: "127.0.0.1:443"}
"""
CERTS = """\
certificates:
  - name: zeta
    domains: [Zeta.Example.com, www.zeta.example.com]
    issuer: ca
    targets: [b, a]
  - name: alpha
    domains: [alpha.example.com]
    issuer: ca
    key: rsa-2048
    renew_before: 25%
"""


def write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory


def test_examples_load() -> None:
    state = load_desired(EXAMPLES)
    assert len(state.certificates) >= 3
    assert {spec.key_type for spec in state.certificates.values()} >= {KeyType.RSA_2048, KeyType.ECDSA_P256}
    assert any(len(spec.domains) > 1 for spec in state.certificates.values())


def test_model_is_normalised_and_ordered(tmp_path: Path) -> None:
    state = load_desired(write(tmp_path, {"p.yaml": PLUGINS, "c.yaml": CERTS}))
    assert list(state.certificates) == ["alpha", "zeta"]
    zeta = state.certificates["zeta"]
    assert zeta.domains == ("zeta.example.com", "www.zeta.example.com")
    assert zeta.primary == "zeta.example.com"
    assert zeta.targets == ("a", "b")
    assert zeta.key_type is KeyType.ECDSA_P256
    assert state.certificates["alpha"].renew_before.fraction == 0.25
    assert list(state.targets) == ["a", "b"]
    assert state.targets["a"].verify == "127.0.0.1:443"
    issuer = state.issuers["ca"]
    assert isinstance(issuer.config, LocalCaConfig)
    assert issuer.fingerprint == plugin_fingerprint("local_ca", issuer.config)
    assert zeta.location is None  # positions are computed only on request
    with pytest.raises(TypeError):
        state.certificates["new"] = zeta  # type: ignore[index]


def test_missing_kms_defaults_to_local(tmp_path: Path) -> None:
    state = load_desired(write(tmp_path, {"p.yaml": PLUGINS, "c.yaml": CERTS}))
    assert state.kms.kind == "local"
    assert state.kms.config == LocalKmsConfig()


def test_empty_directory_is_a_valid_empty_state(tmp_path: Path) -> None:
    state = load_desired(tmp_path)
    assert dict(state.certificates) == {}
    assert state.kms.kind == "local"


def test_digest_is_stable_across_file_splits_and_key_order(tmp_path: Path) -> None:
    one = load_desired(write(tmp_path / "one", {"all.yaml": PLUGINS + CERTS}))
    reordered = PLUGINS.replace("{lifetime: 30d, common_name: T}", "{common_name: T, lifetime: 30d}")
    two = load_desired(write(tmp_path / "two", {"x/p.yaml": reordered, "c.yml": CERTS}))
    assert one.digest == two.digest
    changed = load_desired(write(tmp_path / "three", {"all.yaml": PLUGINS + CERTS.replace("25%", "30%")}))
    assert changed.digest != one.digest


def test_explicit_default_does_not_change_fingerprint(tmp_path: Path) -> None:
    implicit = load_desired(write(tmp_path / "a", {"p.yaml": "issuers: {ca: {local_ca: {}}}\n"}))
    explicit = load_desired(write(tmp_path / "b", {"p.yaml": "issuers: {ca: {local_ca: {lifetime: 90d}}}\n"}))
    assert implicit.issuers["ca"].fingerprint == explicit.issuers["ca"].fingerprint
    assert implicit.digest == explicit.digest


def test_with_locations_fills_positions(tmp_path: Path) -> None:
    state = load_desired(write(tmp_path, {"p.yaml": PLUGINS, "c.yaml": CERTS}), with_locations=True)
    assert state.certificates["alpha"].location == SourceLocation("c.yaml", 6, 5)
    assert state.issuers["ca"].location == SourceLocation("p.yaml", 2, 3)


def test_errors_are_all_raised_sorted(tmp_path: Path) -> None:
    write(tmp_path, {"b.yaml": "certificates:\n  - {name: x, domains: [x.example.com], issuer: nope}\n",
                     "a.yaml": "issuers: {ca: {local_ca: {lifetime: 0d}}}\n"})
    with pytest.raises(DesiredStateError) as raised:
        load_desired(tmp_path)
    diagnostics = raised.value.diagnostics
    assert all(isinstance(d, Diagnostic) for d in diagnostics)
    assert [(d.location.file, d.code) for d in diagnostics] == [  # type: ignore[attr-defined]
        ("a.yaml", "invalid-duration"), ("b.yaml", "unknown-issuer")]


def test_diagnostic_format() -> None:
    diagnostic = Diagnostic(SourceLocation("c.yaml", 3, 7), "unknown-issuer", "bad", "fix it")
    assert str(diagnostic) == "c.yaml:3:7: error[unknown-issuer]: bad (fix it)"
    assert str(Diagnostic(SourceLocation("c.yaml", 1, 1), "x", "y")) == "c.yaml:1:1: error[x]: y"


def test_missing_directory_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        validate_directory(tmp_path / "nope")
    assert raised.value.code == "desired-dir-not-found"


# ---------------------------------------------------------------- git refs


@pytest.fixture
def repo(tmp_path: Path) -> git.Repo:
    repository = git.Repo.init(tmp_path)
    with repository.config_writer() as config:
        config.set_value("user", "name", "Test")
        config.set_value("user", "email", "dev@example.com")
    return repository


def commit_all(repository: git.Repo, message: str) -> str:
    repository.git.add(all=True)
    repository.index.commit(message)
    return repository.head.commit.hexsha


def test_load_from_git_ref(repo: git.Repo) -> None:
    root = Path(repo.working_tree_dir or ".")
    desired = root / "deploy" / "desired"
    write(desired, {"p.yaml": PLUGINS, "c.yaml": CERTS, ".hidden/x.yaml": "not: [valid\n"})
    write(root, {"other.yaml": "garbage: [\n"})  # outside the desired-state directory
    write(root, {".gitignore": "out-*/\n"})  # the target directories: inside the repository, so ignored
    first = commit_all(repo, "first")
    (desired / "c.yaml").write_text(CERTS.replace("- name: alpha", "- name: beta"))
    commit_all(repo, "second")
    (desired / "c.yaml").write_text("certificates: [\n")  # uncommitted and broken

    at_first = load_desired(desired, ref=first)
    assert list(at_first.certificates) == ["alpha", "zeta"]
    assert at_first.git_commit == first
    assert at_first.git_author_email == "dev@example.com"
    assert list(load_desired(desired, ref="HEAD").certificates) == ["beta", "zeta"]
    assert [d.code for d in validate_directory(desired)] == ["yaml-syntax"]


def test_unknown_git_ref(repo: git.Repo) -> None:
    root = Path(repo.working_tree_dir or ".")
    write(root, {"p.yaml": PLUGINS})
    commit_all(repo, "first")
    with pytest.raises(ConfigError) as raised:
        load_desired(root, ref="no-such-branch")
    assert raised.value.code == "git-ref-not-found"


def test_public_exports_exist() -> None:
    import certreconcile.desired as package
    from certreconcile.desired import documents

    for module in (package, documents):
        for name in module.__all__:
            assert hasattr(module, name), name
    # every kind module exports its Config and its factory
    from certreconcile.desired.kinds import GROUPS, kind_module, kind_names

    for group in GROUPS:
        for kind in kind_names(group):
            module = kind_module(group, kind)
            assert {"Config", "create"} <= set(module.__all__), module.__name__
