"""A folder swapped as a whole, the way Kubernetes updates a mounted Secret (its ``AtomicWriter``).

::

    <folder>/
      ..data -> ..<version>            the one current version (a relative symlink)
      ..<version>/fullchain.pem ...    a complete set of files, never modified once published
      fullchain.pem -> ..data/fullchain.pem    (one such link per file name)
      ..lock                           serialises writers of this folder (flock)

Publishing writes every file into a new version directory (fsync'd), points a temporary
symlink at it and ``rename(2)``s that over ``..data``: a reader that resolves ``..data`` once
sees either the complete old set or the complete new set, never a mix. Software that watches
the folder for moves (Envoy's ``watched_directory``) sees one event per swap. Old versions are
removed afterwards (:meth:`VersionedFolder.remove_old_versions`): a reader still holding one may
then get ``ENOENT`` and must resolve ``..data`` again, as with a Kubernetes volume.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DATA_LINK", "FileContent", "VersionedFolder"]

DATA_LINK = "..data"
_TEMP_LINK = "..data_tmp"
_LOCK = "..lock"


@dataclass(frozen=True, slots=True)
class FileContent:
    data: bytes  # may be a private key: never log or show it
    mode: int


def _fsync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class VersionedFolder:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's writer lock (creating the folder): one publisher at a time."""
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o755)
        fd = os.open(self.folder / _LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def current(self) -> Path | None:
        """The current version directory (``..data`` resolved once), or None before the first publish."""
        try:
            target = os.readlink(self.folder / DATA_LINK)
        except OSError:
            return None
        return self.folder / target

    def holds(self, files: Mapping[str, FileContent]) -> bool:
        """True when the current version has exactly these files with these contents and modes."""
        current = self.current()
        if current is None:
            return False
        try:
            present = {entry.name for entry in current.iterdir()}
            if present != set(files):
                return False
            for name, content in files.items():
                path = current / name
                if (path.stat().st_mode & 0o777) != content.mode or path.read_bytes() != content.data:
                    return False
        except OSError:
            return False
        return all((self.folder / name).is_symlink() for name in files)

    def publish(self, files: Mapping[str, FileContent], label: str) -> Path:
        """Write ``files`` as a new version and make it current; returns the new version directory.

        Call under :meth:`locked`. ``label`` (letters, digits, ``-``) goes into the directory name.
        """
        version = Path(tempfile.mkdtemp(prefix=f"..{label}.", dir=self.folder))
        try:
            version.chmod(0o755)
            for name, content in files.items():
                fd = os.open(version / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, content.mode)
                with os.fdopen(fd, "wb") as handle:
                    os.fchmod(handle.fileno(), content.mode)  # whatever the umask
                    handle.write(content.data)
                    handle.flush()
                    os.fsync(handle.fileno())
            _fsync_directory(version)
            temp_link = self.folder / _TEMP_LINK
            temp_link.unlink(missing_ok=True)
            os.symlink(version.name, temp_link)
            os.replace(temp_link, self.folder / DATA_LINK)  # the swap: one rename(2)
        except BaseException:
            shutil.rmtree(version, ignore_errors=True)
            raise
        for name in files:
            self._link(name)
        _fsync_directory(self.folder)
        return version

    def _link(self, name: str) -> None:
        """``<folder>/<name> -> ..data/<name>``, replaced atomically when it is anything else."""
        path = self.folder / name
        wanted = f"{DATA_LINK}/{name}"
        if path.is_symlink() and os.readlink(path) == wanted:
            return
        temp = self.folder / f"..{name}.link_tmp"
        temp.unlink(missing_ok=True)
        os.symlink(wanted, temp)
        os.replace(temp, path)

    def remove_old_versions(self) -> None:
        """Delete every version directory but the current one (and a stale temporary link)."""
        current = self.current()
        for entry in self.folder.iterdir():
            if not entry.name.startswith("..") or entry.name in (DATA_LINK, _LOCK):
                continue
            if entry.is_symlink() or not entry.is_dir():
                if entry.name == _TEMP_LINK or entry.name.endswith(".link_tmp"):
                    entry.unlink(missing_ok=True)
                continue
            if current is None or entry.name != current.name:
                shutil.rmtree(entry, ignore_errors=True)
