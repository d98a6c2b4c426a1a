"""`run` validates the declarations again only when a file changed (desired.DesiredCache)."""

from __future__ import annotations

from pathlib import Path

import pytest

from certreconcile.desired import DesiredCache, load_desired
from certreconcile.errors import DesiredStateError

BASE = """\
issuers:
  ca:
    local_ca: {common_name: cache test CA}
targets:
  web:
    files: {dir: /srv/web}
policy:
  allowed_domains: ['*.example.test']
"""
CERTIFICATES = """\
certificates:
  - name: shop
    domains: [shop.example.test]
    issuer: ca
    targets: [web]
"""


def write(directory: Path, certificates: str = CERTIFICATES) -> None:
    (directory / "base.yaml").write_text(BASE)
    (directory / "certificates.yaml").write_text(certificates)


def test_unchanged_files_give_the_same_desired_state_without_validating(tmp_path: Path) -> None:
    write(tmp_path)
    cache = DesiredCache()
    first = cache.load(tmp_path)
    assert cache.load(tmp_path) is first  # the same object: nothing was parsed or validated again
    assert first == load_desired(tmp_path)


def test_a_changed_or_added_file_is_loaded_again(tmp_path: Path) -> None:
    write(tmp_path)
    cache = DesiredCache()
    first = cache.load(tmp_path)
    write(tmp_path, CERTIFICATES.replace("shop.example.test", "store.example.test"))
    changed = cache.load(tmp_path)
    assert changed.certificates["shop"].domains == ("store.example.test",)
    (tmp_path / "more.yaml").write_text(CERTIFICATES.replace("shop", "api"))
    assert set(cache.load(tmp_path).certificates) == {"shop", "api"}
    assert first.certificates["shop"].domains == ("shop.example.test",)


def test_an_invalid_edit_is_reported_not_hidden_by_the_cache(tmp_path: Path) -> None:
    write(tmp_path)
    cache = DesiredCache()
    cache.load(tmp_path)
    write(tmp_path, CERTIFICATES.replace("issuer: ca", "issuer: nobody"))
    with pytest.raises(DesiredStateError):
        cache.load(tmp_path)
