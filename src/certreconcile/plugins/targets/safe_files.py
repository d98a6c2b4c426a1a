"""Writing below a target's directory without following a symbolic link: everything through directory descriptors.

A file-writing target is configured with one directory (``dir``, ``cert_dir``, ``sds_dir``,
``dynamic_dir``). That directory is trusted like any configured path: it is created when missing
and opened, following the links of its own path. Below it nothing is followed, because whoever
can write to it could otherwise send a private key elsewhere:

* a folder (``<dir>/<name>/``) is opened with ``O_NOFOLLOW | O_DIRECTORY`` relative to its
  parent's descriptor; one that is a symbolic link, or not a directory, is refused
  (``target-path-unsafe``) before anything is written;
* a file is written to a new temporary file in its folder (``O_CREAT | O_EXCL | O_NOFOLLOW``,
  mode 0600 from the start, its final mode set before the first byte), fsync'd, and renamed over
  its name: a link already there is replaced, never written through. The folder is fsync'd after;
* temporary names are ``.certreconcile-tmp-<final name>.<16 hex>`` (hidden, and not ending in
  ``.yaml`` or ``.pem``: a server loading a whole directory skips them). Those a killed write
  left are removed by the next deployment into that folder (only ours, by that exact form;
  ``unlink`` removes a link itself, never what it points to; a directory is never ours).

Every writer of a per-name folder holds a ``flock`` on it (:func:`write_file_set`, and
versioned.py), so a temporary of ours found there is stale, never a live one. Files directly in
the configured directory (HAProxy's ``<name>.pem``, Traefik's YAML) are serialised by their
target's own lock: there only the temporaries of the names being written are removed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import shutil
import stat
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from certreconcile.errors import TargetError

__all__ = [
    "TEMP_PREFIX",
    "UNSAFE_PATH",
    "FileContent",
    "FileSet",
    "PemFolderSnapshot",
    "SymlinkEntry",
    "TargetDirectory",
    "write_file_set",
]

TEMP_PREFIX = ".certreconcile-tmp-"
UNSAFE_PATH = "target-path-unsafe"
_TOKEN_LENGTH = 16  # hex digits
_DIRECTORY_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True, slots=True)
class FileContent:
    data: bytes  # may be a private key: never log or show it
    mode: int


@dataclass(frozen=True, slots=True)
class SymlinkEntry:
    """A symbolic link found where a file is written: what it points to (never followed)."""

    target: str


def _temporary_name(final: str) -> str:
    return f"{TEMP_PREFIX}{final}.{secrets.token_hex(_TOKEN_LENGTH // 2)}"


def _final_name_of(name: str) -> str | None:
    """The name a temporary of ours was to become, or None when ``name`` is not one of ours."""
    if not name.startswith(TEMP_PREFIX):
        return None
    final, dot, token = name[len(TEMP_PREFIX) :].rpartition(".")
    if len(token) != _TOKEN_LENGTH or any(c not in "0123456789abcdef" for c in token) or not dot or not final:
        return None
    return final


def _check_name(name: str) -> None:
    """One path component: a relative path like ``../x`` or ``a/b`` would step out of the folder."""
    if name in ("", ".", "..") or "/" in name or "\0" in name:
        raise TargetError(f"{name!r} is not a file name", code=UNSAFE_PATH)


class TargetDirectory:
    """An open directory (its descriptor) at ``path``, at or below a target's configured directory."""

    def __init__(self, fd: int, path: Path, target: str) -> None:
        self.fd = fd
        self.path = path  # for messages only: every operation goes through ``fd``
        self.target = target  # the target's name, for messages

    @classmethod
    @contextlib.contextmanager
    def open_root(cls, path: Path, target: str) -> Iterator[TargetDirectory]:
        """The configured directory (created when missing), open for the block."""
        os.makedirs(path, mode=0o755, exist_ok=True)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        with cls(fd, path, target) as directory:
            yield directory

    def __enter__(self) -> TargetDirectory:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None) -> None:
        os.close(self.fd)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive ``flock`` on this directory for the block (no lock file needed)."""
        fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def subdirectory(self, name: str, *, create: bool = True) -> TargetDirectory:
        """Open the directory ``name`` (made when missing and ``create``); a link or a non-directory is refused.

        Raises ``FileNotFoundError`` when it is missing and not ``create``. The caller closes it (``with``).
        """
        _check_name(name)
        if create:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=self.fd)
        try:
            fd = os.open(name, _DIRECTORY_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self._refusal(name, "a directory") from None
            raise
        return TargetDirectory(fd, self.path / name, self.target)

    def real_subdirectory(self, name: str) -> TargetDirectory | None:
        """Open the directory ``name``, or None when it is missing, a link or not a directory."""
        if name in ("", ".", "..") or "/" in name:
            return None
        try:
            return TargetDirectory(os.open(name, _DIRECTORY_FLAGS, dir_fd=self.fd), self.path / name, self.target)
        except OSError:
            return None

    def create_unique_subdirectory(self, prefix: str) -> TargetDirectory:
        """A new directory ``<prefix><8 hex>`` (mode 0755), like ``mkdtemp``."""
        while True:
            name = f"{prefix}{secrets.token_hex(4)}"
            try:
                os.mkdir(name, 0o700, dir_fd=self.fd)
            except FileExistsError:
                continue
            child = self.subdirectory(name, create=False)
            os.fchmod(child.fd, 0o755)
            return child

    def _refusal(self, name: str, expected: str) -> TargetError:
        path = self.path / name
        with contextlib.suppress(OSError):
            if stat.S_ISLNK(os.stat(name, dir_fd=self.fd, follow_symlinks=False).st_mode):
                return TargetError(
                    f"target {self.target}: {path} is a symbolic link; nothing is written through it",
                    code=UNSAFE_PATH,
                    hint=f"remove the symlink {path} (the link itself, not what it points to), then apply again: "
                    f"certreconcile writes only into real directories below {self.path}",
                )
        return TargetError(
            f"target {self.target}: {path} is not {expected}; nothing was written",
            code=UNSAFE_PATH,
            hint=f"move {path} out of the way, then apply again",
        )

    def names(self) -> list[str]:
        return os.listdir(self.fd)

    def read_regular(self, name: str) -> FileContent | None:
        """The content and mode of the regular file ``name``; None when missing, a link or anything else."""
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=self.fd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return None
            raise
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            return FileContent(handle.read(), info.st_mode & 0o777) if stat.S_ISREG(info.st_mode) else None

    def read_entry(self, name: str) -> FileContent | SymlinkEntry | None:
        """What ``name`` is now: a regular file, a link, or None (missing); anything else is refused."""
        try:
            info = os.stat(name, dir_fd=self.fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        if stat.S_ISLNK(info.st_mode):
            return SymlinkEntry(os.readlink(name, dir_fd=self.fd))
        content = self.read_regular(name) if stat.S_ISREG(info.st_mode) else None
        if content is None:
            raise self._refusal(name, "a regular file")
        return content

    def readlink(self, name: str) -> str | None:
        try:
            return os.readlink(name, dir_fd=self.fd)
        except OSError:  # missing, or not a link
            return None

    def write_new_file(self, name: str, content: FileContent) -> None:
        """Create ``name``, which must not exist (0600 until its mode is set, before the first byte), fsync'd."""
        fd = os.open(name, _NEW_FILE_FLAGS, 0o600, dir_fd=self.fd)
        with os.fdopen(fd, "wb") as handle:
            os.fchmod(handle.fileno(), content.mode)  # whatever the umask
            handle.write(content.data)
            handle.flush()
            os.fsync(handle.fileno())

    def write_file(self, name: str, content: FileContent) -> None:
        """Replace ``name`` atomically (a link there is replaced, not followed). Then :meth:`fsync`."""
        _check_name(name)
        temp = _temporary_name(name)
        try:
            self.write_new_file(temp, content)
            os.replace(temp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            self.remove(temp)
            raise

    def write_files(self, files: Mapping[str, FileContent]) -> None:
        """Remove the stale temporaries of these names, write each (0600 ones first), fsync the directory."""
        self.remove_stale_temporaries(files)
        for name, content in sorted(files.items(), key=lambda item: item[1].mode != 0o600):
            self.write_file(name, content)
        self.fsync()

    def replace_with_symlink(self, name: str, link: str) -> None:
        """Make ``name`` a symbolic link to ``link``, atomically (one ``rename(2)``)."""
        _check_name(name)
        temp = _temporary_name(name)
        os.symlink(link, temp, dir_fd=self.fd)
        try:
            os.replace(temp, name, src_dir_fd=self.fd, dst_dir_fd=self.fd)
        except BaseException:
            self.remove(temp)
            raise

    def remove(self, name: str) -> None:
        """Unlink ``name`` (a link itself, never what it points to); nothing when it is missing."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=self.fd)

    def remove_tree(self, name: str) -> None:
        """Delete the directory ``name`` and everything in it, following no link (errors ignored)."""
        shutil.rmtree(name, ignore_errors=True, dir_fd=self.fd)

    def remove_stale_temporaries(self, finals: Collection[str] | None = None) -> None:
        """Remove our temporaries (those of ``finals``, else all) left by a killed write; never a directory."""
        with os.scandir(self.fd) as entries:
            stale = [
                entry.name
                for entry in entries
                if (final := _final_name_of(entry.name)) is not None
                and (finals is None or final in finals)
                and not entry.is_dir(follow_symlinks=False)
            ]
        for name in stale:
            self.remove(name)

    def fsync(self) -> None:
        os.fsync(self.fd)


@dataclass(frozen=True, slots=True)
class FileSet:
    """Files to write below one target's directory, by relative path (``shop/privkey.pem``, ``shop.pem``)."""

    target: str  # the target's name, for messages
    root: Path  # the configured directory
    files: Mapping[str, FileContent]  # may hold a private key: never log or show it


def _split(relative: str) -> tuple[tuple[str, ...], str]:
    *folders, name = relative.split("/")
    for part in (*folders, name):
        _check_name(part)
    return tuple(folders), name


def _open_folder(
    stack: contextlib.ExitStack, opened: dict[tuple[str, ...], TargetDirectory], folders: tuple[str, ...]
) -> TargetDirectory:
    """The folder at ``folders`` below ``opened[()]`` (each level made when missing), kept open by ``stack``."""
    for depth in range(1, len(folders) + 1):
        key = folders[:depth]
        if key not in opened:
            opened[key] = stack.enter_context(opened[key[:-1]].subdirectory(key[-1]))
    return opened[folders]


def write_file_set(file_set: FileSet) -> None:
    """Write every file atomically, private (0600) files first: whoever sees a new certificate finds its key.

    Every folder is opened (and refused if unsafe) before the first byte is written.
    """
    with TargetDirectory.open_root(file_set.root, file_set.target) as root, contextlib.ExitStack() as stack:
        opened: dict[tuple[str, ...], TargetDirectory] = {(): root}
        placed: list[tuple[TargetDirectory, str, FileContent]] = []
        for relative, content in file_set.files.items():
            folders, name = _split(relative)
            placed.append((_open_folder(stack, opened, folders), name, content))
        for key in sorted(opened):  # a per-name folder: one writer at a time (the root is the caller's to lock)
            if key:
                stack.enter_context(opened[key].locked())
        for key, folder in opened.items():  # under its lock, every temporary of ours in a folder is stale
            folder.remove_stale_temporaries({name for where, name, _ in placed if where is folder} if not key else None)
        for folder, name, content in sorted(placed, key=lambda item: item[2].mode != 0o600):
            folder.write_file(name, content)
        for folder in opened.values():
            folder.fsync()


def _existing_folder(
    stack: contextlib.ExitStack, root: TargetDirectory, folders: tuple[str, ...]
) -> tuple[TargetDirectory | None, int]:
    """The folder at ``folders`` (unsafe ones refused) and how deep the path exists (None: not all of it)."""
    folder = root
    for depth, name in enumerate(folders):
        try:
            folder = stack.enter_context(folder.subdirectory(name, create=False))
        except FileNotFoundError:
            return None, depth
    return folder, len(folders)


@dataclass(frozen=True, slots=True)
class PemFolderSnapshot:
    """Some files before a deployment (their content or link, None: absent) and the folders that were missing.

    Taking it refuses an unsafe folder before anything is written. Holds a private key in memory:
    never log or show it.
    """

    file_set: FileSet
    previous: Mapping[str, FileContent | SymlinkEntry | None]
    created_folders: tuple[str, ...]  # relative, deepest first

    @classmethod
    def take(cls, file_set: FileSet) -> PemFolderSnapshot:
        previous: dict[str, FileContent | SymlinkEntry | None] = {}
        missing: set[tuple[str, ...]] = set()
        with TargetDirectory.open_root(file_set.root, file_set.target) as root, contextlib.ExitStack() as stack:
            for relative in file_set.files:
                folders, name = _split(relative)
                folder, depth = _existing_folder(stack, root, folders)
                previous[relative] = folder.read_entry(name) if folder is not None else None
                missing.update(folders[: end + 1] for end in range(depth, len(folders)))
        created = sorted(missing, key=len, reverse=True)
        return cls(file_set, previous, tuple("/".join(folders) for folders in created))

    def describe_restore(self) -> str:
        """What :meth:`restore` does, for an error message."""
        return "previous files restored" if any(self.previous.values()) else "new files removed"

    def restore(self) -> None:
        """Put every file back as it was (atomically) and remove the files and folders that were new."""
        contents = {path: entry for path, entry in self.previous.items() if isinstance(entry, FileContent)}
        write_file_set(FileSet(self.file_set.target, self.file_set.root, contents))
        with TargetDirectory.open_root(self.file_set.root, self.file_set.target) as root:
            for relative, entry in self.previous.items():
                if not isinstance(entry, FileContent):
                    self._put_back(root, relative, entry)
            for relative in self.created_folders:
                self._put_back(root, relative, None, directory=True)

    @staticmethod
    def _put_back(root: TargetDirectory, relative: str, entry: SymlinkEntry | None, directory: bool = False) -> None:
        folders, name = _split(relative)
        with contextlib.ExitStack() as stack:
            folder, _ = _existing_folder(stack, root, folders)
            if folder is None:
                return
            if directory:
                with contextlib.suppress(OSError):  # not empty: someone else's files
                    os.rmdir(name, dir_fd=folder.fd)
            elif entry is None:
                folder.remove(name)
            else:
                folder.replace_with_symlink(name, entry.target)
            folder.fsync()
