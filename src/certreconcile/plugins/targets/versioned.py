"""A folder swapped as a whole, the way Kubernetes updates a mounted Secret (its ``AtomicWriter``).

::

    <folder>/
      ..data -> ..<version>            the one current version (a relative symlink)
      ..<version>/fullchain.pem ...    a complete set of files, never modified once published
      fullchain.pem -> ..data/fullchain.pem    (one such link per file name)

Publishing writes every file into a new version directory (fsync'd), points a temporary
symlink at it and ``rename(2)``s that over ``..data``: a reader that resolves ``..data`` once
sees either the complete old set or the complete new set, never a mix. Software that watches
the folder for moves (Envoy's ``watched_directory``) sees one event per swap. Old versions are
removed afterwards (:meth:`OpenVersionedFolder.remove_old_versions`): a reader still holding one may
then get ``ENOENT`` and must resolve ``..data`` again, as with a Kubernetes volume.

Writers of a folder are serialised by a ``flock`` on the folder itself (earlier releases used a
``..lock`` file, left alone). Everything goes through directory descriptors (safe_files.py): a
folder that is a symbolic link is refused, no link in it is followed, and the temporaries a
killed deployment left are removed by the next one.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

from certreconcile.plugins.targets.safe_files import FileContent, TargetDirectory

__all__ = ["DATA_LINK", "FileContent", "OpenVersionedFolder", "VersionedFolder"]

DATA_LINK = "..data"
_LEGACY_TEMPORARIES = ("..data_tmp",)  # and ``..<name>.link_tmp``: what earlier releases left
_LEGACY_LOCK = "..lock"


def _is_version_name(name: str) -> bool:
    return name.startswith("..") and len(name) > 2 and "/" not in name and name not in (DATA_LINK, _LEGACY_LOCK)


class VersionedFolder:
    """``<root>/<name>/`` of target ``target``: ``root`` is the configured directory."""

    def __init__(self, root: Path, name: str, target: str) -> None:
        self.root = root
        self.name = name
        self.target = target

    @property
    def folder(self) -> Path:
        return self.root / self.name

    def current(self) -> Path | None:
        """The current version directory (``..data`` resolved once), or None before the first publish.

        For reading back (``observe``); deployments use :meth:`OpenVersionedFolder.current`.
        """
        try:
            target = os.readlink(self.folder / DATA_LINK)
        except OSError:
            return None
        return self.folder / target

    @contextlib.contextmanager
    def locked(self) -> Iterator[OpenVersionedFolder]:
        """The folder (made when missing, refused when it is a link), its writer lock held: one publisher at a time."""
        with (
            TargetDirectory.open_root(self.root, self.target) as root,
            root.subdirectory(self.name) as folder,
            folder.locked(),
        ):
            folder.remove_stale_temporaries()
            yield OpenVersionedFolder(root, folder)


class OpenVersionedFolder:
    """A versioned folder open and locked for writing (see :meth:`VersionedFolder.locked`)."""

    def __init__(self, root: TargetDirectory, folder: TargetDirectory) -> None:
        self.root = root  # the configured directory
        self.folder = folder

    def current(self) -> str | None:
        """The name of the current version directory, or None (before the first publish, or not one of ours)."""
        link = self.folder.readlink(DATA_LINK)
        return link if link is not None and _is_version_name(link) else None

    def holds(self, files: Mapping[str, FileContent]) -> bool:
        """True when the current version has exactly these files with these contents and modes."""
        current = self.current()
        version = self.folder.real_subdirectory(current) if current is not None else None
        if version is None:
            return False
        with version:
            if set(version.names()) != set(files):
                return False
            if any(version.read_regular(name) != content for name, content in files.items()):
                return False
        return all(self.folder.readlink(name) == f"{DATA_LINK}/{name}" for name in files)

    def publish(self, files: Mapping[str, FileContent], label: str) -> str:
        """Write ``files`` as a new version and make it current; returns the new version's name.

        ``label`` (letters, digits, ``-``) goes into the directory name.
        """
        version = self.folder.create_unique_subdirectory(f"..{label}.")
        name = version.path.name
        try:
            with version:
                for file_name, content in files.items():
                    version.write_new_file(file_name, content)
                version.fsync()
            self.folder.replace_with_symlink(DATA_LINK, name)  # the swap: one rename(2)
        except BaseException:
            self.folder.remove_tree(name)
            raise
        for file_name in files:
            if self.folder.readlink(file_name) != f"{DATA_LINK}/{file_name}":
                self.folder.replace_with_symlink(file_name, f"{DATA_LINK}/{file_name}")
        self.folder.fsync()
        return name

    def remove_old_versions(self) -> None:
        """Delete every version directory but the current one (and temporary links of earlier releases)."""
        current = self.current()
        with os.scandir(self.folder.fd) as scan:
            entries = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in scan]
        for name, is_directory in entries:
            if not is_directory:
                if name in _LEGACY_TEMPORARIES or (name.startswith("..") and name.endswith(".link_tmp")):
                    self.folder.remove(name)
            elif _is_version_name(name) and name != current:
                self.folder.remove_tree(name)
