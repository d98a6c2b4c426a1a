"""File-writing targets never write through a symbolic link below their directory (issue 13, defect 7).

Someone who can write to a target's directory (``<dir>``) must not be able to send the private
key elsewhere: a per-name folder that is a symbolic link (or not a directory) is refused before
anything is written; a link where a file goes is replaced, never followed; temporaries left by a
killed write are removed on the next deployment. Every kind that writes files: files, nginx and
HAProxy (without their servers: ``true`` as test and reload command), envoy and traefik.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from certreconcile.errors import TargetError
from certreconcile.plugins.ports import Target
from certreconcile.plugins.targets.envoy import EnvoyTarget
from certreconcile.plugins.targets.envoy_config import EnvoyTargetConfig
from certreconcile.plugins.targets.files import FilesTarget
from certreconcile.plugins.targets.files_config import FilesTargetConfig
from certreconcile.plugins.targets.haproxy import HaproxyTarget
from certreconcile.plugins.targets.haproxy_config import HaproxyTargetConfig
from certreconcile.plugins.targets.nginx import NginxTarget
from certreconcile.plugins.targets.nginx_config import NginxTargetConfig
from certreconcile.plugins.targets.safe_files import FileContent, FileSet, write_file_set
from certreconcile.plugins.targets.traefik import TraefikTarget
from certreconcile.plugins.targets.traefik_config import TraefikTargetConfig
from certreconcile.testing.target_contract import bundle_maker

SHOP = bundle_maker("shop", ("shop.example.test",))
TOKEN = ".0123456789abcdef"


def _stale(name: str) -> str:
    """A temporary a write killed between create and rename leaves."""
    return f".certreconcile-tmp-{name}{TOKEN}"


def _files(out: Path, test_command: str) -> Target:
    return FilesTarget("deploy-dir", FilesTargetConfig(dir=str(out)), out.parent)


def _nginx(out: Path, test_command: str) -> Target:
    config = NginxTargetConfig(cert_dir=str(out), test_command=test_command, reload_command="true")
    return NginxTarget("edge-nginx", config, out.parent)


def _haproxy(out: Path, test_command: str) -> Target:
    return HaproxyTarget("edge-haproxy", HaproxyTargetConfig(cert_dir=str(out), test_command=test_command), out.parent)


def _envoy(out: Path, test_command: str) -> Target:
    return EnvoyTarget("edge-envoy", EnvoyTargetConfig(sds_dir=str(out)), out.parent)


def _traefik(out: Path, test_command: str) -> Target:
    return TraefikTarget("edge-traefik", TraefikTargetConfig(dynamic_dir=str(out)), out.parent)


MAKERS: dict[str, Callable[[Path, str], Target]] = {
    "files": _files,
    "nginx": _nginx,
    "haproxy": _haproxy,
    "envoy": _envoy,
    "traefik": _traefik,
}
PLAIN_FOLDERS = ("files", "nginx", "haproxy")  # <dir>/<name>/privkey.pem is a regular file


def _tree(root: Path) -> dict[str, bytes | str]:
    """Everything under ``root``: a file's bytes, a link's text, ``"dir"`` for a directory."""
    tree: dict[str, bytes | str] = {}
    for path in sorted(root.rglob("*")):
        relative = str(path.relative_to(root))
        if path.is_symlink():
            tree[relative] = "-> " + os.readlink(path)
        elif path.is_dir():
            tree[relative] = "dir"
        else:
            tree[relative] = path.read_bytes()
    return tree


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """Where a planted link points: nothing may appear or change there."""
    directory = tmp_path / "outside"
    directory.mkdir()
    return directory


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_a_symlinked_folder_is_refused_and_nothing_is_written(tmp_path: Path, outside: Path, kind: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "shop").symlink_to(outside, target_is_directory=True)
    with pytest.raises(TargetError) as caught:
        MAKERS[kind](out, "true").deploy(SHOP())
    assert caught.value.code == "target-path-unsafe"
    assert f"{out / 'shop'} is a symbolic link" in caught.value.message
    assert caught.value.hint.startswith(f"remove the symlink {out / 'shop'}")
    assert list(outside.iterdir()) == []
    assert _tree(out) == {"shop": f"-> {outside}"}  # not even HAProxy's shop.pem or Traefik's YAML


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_a_per_name_entry_that_is_a_file_is_refused(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "shop").write_bytes(b"not a folder")
    with pytest.raises(TargetError) as caught:
        MAKERS[kind](out, "true").deploy(SHOP())
    assert caught.value.code == "target-path-unsafe"
    assert "is not a directory" in caught.value.message
    assert _tree(out) == {"shop": b"not a folder"}


@pytest.mark.parametrize("kind", PLAIN_FOLDERS)
def test_a_symlinked_file_is_replaced_not_followed(tmp_path: Path, outside: Path, kind: str) -> None:
    out, secret = tmp_path / "out", outside / "secret"
    secret.write_bytes(b"not yours")
    secret.chmod(0o644)
    (out / "shop").mkdir(parents=True)
    for name in ("privkey.pem", "cert.pem"):
        (out / "shop" / name).symlink_to(secret)
    if kind == "haproxy":
        (out / "shop.pem").symlink_to(secret)
    bundle = SHOP()
    MAKERS[kind](out, "true").deploy(bundle)
    assert secret.read_bytes() == b"not yours"
    assert secret.stat().st_mode & 0o777 == 0o644
    key = out / "shop" / "privkey.pem"
    assert not key.is_symlink()
    assert key.read_bytes() == bundle.key_pem.reveal()
    assert key.stat().st_mode & 0o777 == 0o600
    assert (out / "shop" / "cert.pem").read_text() == bundle.cert_pem
    if kind == "haproxy":
        assert not (out / "shop.pem").is_symlink()
        assert (out / "shop.pem").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("kind", ["nginx", "haproxy"])
def test_a_rolled_back_deployment_puts_a_link_back_without_copying_what_it_points_to(
    tmp_path: Path, outside: Path, kind: str
) -> None:
    out, secret = tmp_path / "out", outside / "secret"
    secret.write_bytes(b"someone else's secret")
    (out / "shop").mkdir(parents=True)
    (out / "shop" / "privkey.pem").symlink_to(secret)
    with pytest.raises(TargetError) as caught:
        MAKERS[kind](out, "false").deploy(SHOP())  # the configuration test fails: roll back
    assert caught.value.code == "target-config-test-failed"
    assert os.readlink(out / "shop" / "privkey.pem") == str(secret)  # as it was, not a copy of the secret
    assert secret.read_bytes() == b"someone else's secret"
    assert sorted(path.name for path in (out / "shop").iterdir()) == ["privkey.pem"]


@pytest.mark.parametrize("kind", ["envoy", "traefik"])
def test_versioned_folders_follow_no_link_either(tmp_path: Path, outside: Path, kind: str) -> None:
    out = tmp_path / "out"
    (out / "shop").mkdir(parents=True)
    (out / "shop" / "..lock").symlink_to(outside / "lock")  # the lock file of earlier releases
    (out / "shop" / "privkey.pem").symlink_to(outside / "secret")
    if kind == "traefik":
        (out / "certreconcile-shop.yaml").symlink_to(outside / "config.yaml")
    bundle = SHOP()
    target = MAKERS[kind](out, "true")
    target.deploy(bundle)
    assert list(outside.iterdir()) == []
    assert os.readlink(out / "shop" / "privkey.pem") == "..data/privkey.pem"
    assert (out / "shop" / "privkey.pem").read_bytes() == bundle.key_pem.reveal()
    assert target.observe("shop", bundle.domains).fingerprint == bundle.fingerprint


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_stale_temporaries_are_removed_on_the_next_deployment(tmp_path: Path, outside: Path, kind: str) -> None:
    out = tmp_path / "out"
    target = MAKERS[kind](out, "true")
    target.deploy(SHOP())
    folder = out / "shop"
    (folder / _stale("privkey.pem")).write_bytes(b"half a key")
    (folder / _stale("cert.pem")).symlink_to(outside / "victim")  # removed as a link, never followed
    (outside / "victim").write_bytes(b"untouched")
    (folder / _stale("..data")).symlink_to("..gone")
    (folder / ".certreconcile-tmp-unrelated").write_bytes(b"not one of our names")  # kept
    (folder / "notes.txt").write_bytes(b"kept")
    (folder / _stale("dir")).mkdir()  # a directory is never ours: kept
    if kind == "haproxy":
        (out / _stale("shop.pem")).write_bytes(b"half a combined file")
        (out / _stale("blog.pem")).write_bytes(b"another certificate's write: not touched by shop's")
    rotated = SHOP()
    target.deploy(rotated)
    left = sorted(path.name for path in folder.iterdir() if path.name.startswith(".certreconcile-tmp-"))
    assert left == [_stale("dir"), ".certreconcile-tmp-unrelated"]
    assert (folder / "notes.txt").read_bytes() == b"kept"
    assert (outside / "victim").read_bytes() == b"untouched"
    assert (folder / "privkey.pem").read_bytes() == rotated.key_pem.reveal()
    if kind == "haproxy":
        assert sorted(path.name for path in out.glob(".certreconcile-tmp-*")) == [_stale("blog.pem")]


@pytest.mark.parametrize("kind", sorted(MAKERS))
def test_the_key_is_0600_whatever_the_umask(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out"
    (out / "shop").mkdir(parents=True)
    if kind in PLAIN_FOLDERS:
        (out / "shop" / "privkey.pem").write_bytes(b"old")
        (out / "shop" / "privkey.pem").chmod(0o644)
    previous = os.umask(0)
    try:
        bundle = SHOP()
        MAKERS[kind](out, "true").deploy(bundle)
    finally:
        os.umask(previous)
    key = out / "shop" / "privkey.pem"
    assert key.read_bytes() == bundle.key_pem.reveal()
    assert key.stat().st_mode & 0o777 == 0o600
    assert (out / "shop" / "fullchain.pem").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("relative", ["../escaped.pem", "shop/../../escaped.pem", "/escaped.pem", "shop//x.pem"])
def test_a_file_set_never_steps_out_of_its_directory(tmp_path: Path, relative: str) -> None:
    out = tmp_path / "out"
    with pytest.raises(TargetError) as caught:
        write_file_set(FileSet("t", out, {relative: FileContent(b"x", 0o644)}))
    assert caught.value.code == "target-path-unsafe"
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["out"]


def test_a_symlink_deeper_down_is_refused_too(tmp_path: Path, outside: Path) -> None:
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "a" / "b").symlink_to(outside)
    with pytest.raises(TargetError) as caught:
        write_file_set(
            FileSet("t", out, {"a/b/c/key.pem": FileContent(b"x", 0o600), "top.pem": FileContent(b"y", 0o644)})
        )
    assert caught.value.code == "target-path-unsafe"
    assert f"{out / 'a' / 'b'} is a symbolic link" in caught.value.message
    assert list(outside.iterdir()) == []
    assert not (out / "top.pem").exists()  # every folder is opened before the first write
