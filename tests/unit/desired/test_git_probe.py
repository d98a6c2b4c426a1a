"""The git probe answers "no repository" only where GitPython would find none (so skipping it changes nothing)."""

from __future__ import annotations

from pathlib import Path

import git
import pytest

from certreconcile.desired.git_probe import may_be_in_git_repository
from helpers import require_binary


def gitpython_finds(path: Path) -> bool:
    try:
        git.Repo(path, search_parent_directories=True)
    except (git.InvalidGitRepositoryError, git.NoSuchPathError):
        return False
    return True


def test_a_folder_outside_any_repository(tmp_path: Path) -> None:
    folder = tmp_path / "desired"
    folder.mkdir()
    assert not gitpython_finds(folder)
    assert not may_be_in_git_repository(folder)
    assert not may_be_in_git_repository(tmp_path / "missing")  # GitPython: NoSuchPathError


@pytest.mark.parametrize("bare", [False, True])
def test_a_checkout_its_subfolders_and_a_bare_repository(tmp_path: Path, bare: bool) -> None:
    require_binary("git")
    git.Repo.init(tmp_path / "repo", bare=bare)
    for folder in (tmp_path / "repo", tmp_path / "repo" / "a" / "b"):
        folder.mkdir(parents=True, exist_ok=True)
        assert gitpython_finds(folder)
        assert may_be_in_git_repository(folder)


def test_a_gitfile_as_in_linked_worktrees_and_submodules(tmp_path: Path) -> None:
    (tmp_path / "wt").mkdir()
    (tmp_path / "wt" / ".git").write_text("gitdir: /nowhere\n")
    assert may_be_in_git_repository(tmp_path / "wt" / "sub")


def test_paths_gitpython_expands_are_left_to_it(tmp_path: Path) -> None:
    assert may_be_in_git_repository(Path("~/desired"))
    assert may_be_in_git_repository(tmp_path / "$HOME")
