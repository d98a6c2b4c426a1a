"""Could a folder be inside a Git repository? A few ``lstat`` calls instead of importing GitPython.

GitPython costs ~30 ms to import; most commands run on a checkout and need it, but a folder outside any
repository (a generated directory, a container's mounted configuration) should not pay for it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["may_be_in_git_repository"]

# What GitPython's Repo(path, search_parent_directories=True) looks for in each folder from ``path`` up:
# a ``.git`` entry (folder, gitfile, submodule), or the folder being a git directory itself (``HEAD``;
# a linked worktree's administrative folder has ``gitdir``).
_MARKERS = (".git", "HEAD", "gitdir")


def may_be_in_git_repository(path: Path) -> bool:
    """False only when ``git.Repo(path, search_parent_directories=True)`` cannot find a repository.

    Walks the same folders as GitPython (the absolute, normalised path, then each parent); True
    when one holds a marker, or when the path needs GitPython's own expansion (``~``, ``$VAR``).
    """
    text = os.fspath(path)
    if "$" in text or text.startswith("~"):
        return True
    current = os.path.normpath(os.path.abspath(text))
    while True:
        if any(os.path.lexists(os.path.join(current, marker)) for marker in _MARKERS):
            return True
        parent = os.path.dirname(current)
        if parent == current:
            return False
        current = parent
