"""When ``run`` looks at a target again: a verification schedule per (certificate, target), stat before parse.

``plan --refresh`` probes every target (:func:`certreconcile.actual.refresh.observe_targets`). ``run``
probes through a :class:`VerificationSchedule`, which reuses the last observation of a pair instead when
all of these hold:

- that observation was *verified*: the target served the stored certificate (same fingerprint, no error);
- the stored certificate and the target's declaration are still the ones it was verified against (a
  renewal or deploy by anyone, another replica or a person's ``apply`` included, makes the pair due);
- the pair is not due: it was verified less than ``every`` ago (plus up to ``jitter`` of it, random,
  so 10,000 pairs verified together spread out over the following cycles);
- for a target that reads files back (``read_back_files``): the files' inode, size and modification
  time are those stat showed just before the verified read. A file changed by hand is read again at once.

Anything else (drift, an error, an unreachable host, a name never seen) is probed every cycle, as
before. After ``run`` deployed a name it :meth:`~VerificationSchedule.forget` s it: the next cycle probes it.

The schedule can live in a file (``path``; JSON, no secret: fingerprints, serial numbers, dates and file
stamps), so ``run --once`` from cron keeps it between processes. An unreadable file is an empty schedule.
"""

from __future__ import annotations

import json
import logging
import os
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from certreconcile.actual.model import Observations, ServedCertificate
from certreconcile.actual.refresh import Observable, Probe, observe_targets

__all__ = [
    "DEFAULT_VERIFY_EVERY",
    "DEFAULT_VERIFY_JITTER",
    "Expected",
    "ReadsBackFiles",
    "VerificationSchedule",
    "file_stamp",
]

#: How often ``run`` verifies a target that served the right certificate when last looked at.
DEFAULT_VERIFY_EVERY = timedelta(hours=1)
#: Each next verification comes up to this share of ``every`` later (random), so pairs spread out.
DEFAULT_VERIFY_JITTER = 0.1
_FORMAT = 3

log = logging.getLogger("certreconcile.run")

Key = tuple[str, str]  # (certificate name, target name)
#: ``inode:size:mtime_ns`` of each file a target reads back, joined by ``/`` (the paths follow from the
#: pair and the target's declaration, both part of what a reused observation must match).
Stamp = str


@dataclass(frozen=True, slots=True)
class Expected:
    """What a pair should serve now: the stored certificate, under the target's current declaration."""

    fingerprint: str
    declaration: str | None  # the target's declaration fingerprint (None: not a declared target)


class ReadsBackFiles(Protocol):
    """A target whose ``observe`` only reads local files (read-back): they are stat-ed before it is parsed."""

    def read_back_files(self, name: str) -> tuple[str, ...] | None:
        """The files ``observe(name)`` reads; None when it does not read files (e.g. a ``verify:`` handshake)."""
        ...


def file_stamp(paths: Iterable[str]) -> Stamp | None:
    """Inode, size and modification time of each file (symbolic links followed); None when one is missing."""
    stamps = []
    for path in paths:
        try:
            seen = os.stat(path)
        except OSError:
            return None
        stamps.append(f"{seen.st_ino}:{seen.st_size}:{seen.st_mtime_ns}")
    return "/".join(stamps)


@dataclass(frozen=True, slots=True)
class _Verified:
    served: ServedCertificate
    expected: Expected
    due: datetime
    stamp: Stamp | None


class VerificationSchedule:
    """The last verified observation of each pair, and when it is due again (see the module's docstring)."""

    def __init__(
        self,
        every: timedelta = DEFAULT_VERIFY_EVERY,
        *,
        jitter: float = DEFAULT_VERIFY_JITTER,
        rng: random.Random | None = None,
        path: Path | None = None,
    ) -> None:
        self.every = every
        self.jitter = jitter
        self.path = path
        self._rng = rng or random.Random()  # noqa: S311  spreading work, not secrets
        self._entries: dict[Key, _Verified] | None = None  # None: not loaded yet
        self._dirty = False
        self.probed = 0  # pairs probed by the last observe
        self.reused = 0  # pairs whose last verified observation the last observe reused

    def observe(
        self,
        probes: Iterable[Probe],
        targets: Mapping[str, Observable],
        expected: Mapping[Key, Expected],
        now: datetime,
        *,
        probe: Callable[[list[Probe], Mapping[str, Observable]], Observations] = observe_targets,
    ) -> Observations:
        """The observations of ``probes``: reused where verified and not due, probed (and recorded) elsewhere."""
        entries = self._load()
        wanted = [item for item in probes if item[2] in targets]
        reused: dict[Key, ServedCertificate] = {}
        due: list[Probe] = []
        stamps: dict[Key, Stamp | None] = {}
        readers = {name: _reader(target) for name, target in targets.items()}
        for item in wanted:
            key = (item[0], item[2])
            reader = readers[item[2]]
            files = reader(item[0]) if reader is not None else None
            stamp = file_stamp(files) if files is not None else None
            stamps[key] = stamp
            entry = entries.get(key)
            if entry is not None and _still_good(entry, expected.get(key), stamp, now, files is not None):
                reused[key] = entry.served
            else:
                due.append(item)
        observed = probe(due, targets) if due else Observations()
        for item in due:
            key = (item[0], item[2])
            self._record(key, observed.served.get(key), expected.get(key), stamps[key], now)
        self.probed, self.reused = len(due), len(reused)
        return Observations(served={**reused, **observed.served})

    def forget(self, names: Iterable[str]) -> None:
        """Make every pair of ``names`` due (``run`` deployed them): the next cycle probes them."""
        gone = set(names)
        entries = self._load()
        for key in [key for key in entries if key[0] in gone]:
            del entries[key]
            self._dirty = True

    def _record(
        self, key: Key, served: ServedCertificate | None, expected: Expected | None, stamp: Stamp | None, now: datetime
    ) -> None:
        entries = self._load()
        if served is None or expected is None or not _verified(served, expected):
            if entries.pop(key, None) is not None:
                self._dirty = True
            return
        later = self.every * (1.0 + self._rng.uniform(0.0, self.jitter))
        entries[key] = _Verified(served, expected, now + later, stamp)
        self._dirty = True

    # ------------------------------------------------------------ the file

    def _load(self) -> dict[Key, _Verified]:
        if self._entries is None:
            self._entries = _read(self.path) if self.path is not None else {}
        return self._entries

    def save(self) -> None:
        """Write the schedule to its file when it changed (atomically); a failure is logged, never raised."""
        if self.path is None or not self._dirty or self._entries is None:
            return
        rows = [_row(key, entry) for key, entry in self._entries.items()]
        partial = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial.write_text(json.dumps({"format": _FORMAT, "pairs": rows}, separators=(",", ":")))
            partial.replace(self.path)
        except OSError as exc:
            log.warning("verification schedule not saved to %s: %s", self.path, exc.strerror)
            partial.unlink(missing_ok=True)
            return
        self._dirty = False


def _reader(target: Observable) -> Callable[[str], tuple[str, ...] | None] | None:
    """The target's ``read_back_files`` (see :class:`ReadsBackFiles`), if it has one."""
    reader: Callable[[str], tuple[str, ...] | None] | None = getattr(target, "read_back_files", None)
    return reader


def _verified(served: ServedCertificate, expected: Expected) -> bool:
    return served.error is None and not served.unreachable and served.fingerprint == expected.fingerprint


def _still_good(entry: _Verified, expected: Expected | None, stamp: Stamp | None, now: datetime, files: bool) -> bool:
    if expected is None or entry.expected != expected or now >= entry.due:
        return False
    return not files or (stamp is not None and stamp == entry.stamp)


def _row(key: Key, entry: _Verified) -> list[object]:
    served = entry.served
    return [
        key[0],
        key[1],
        served.fingerprint,
        served.serial_number,
        served.not_after.timestamp() if served.not_after is not None else None,
        entry.expected.declaration,
        entry.due.timestamp(),
        entry.stamp,
    ]


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(float(seconds), UTC)


def _read(path: Path) -> dict[Key, _Verified]:
    try:
        document = json.loads(path.read_text())
        if document.get("format") != _FORMAT:
            return {}
        entries: dict[Key, _Verified] = {}
        for name, target, fingerprint, serial, not_after, declaration, due, stamp in document["pairs"]:
            served = ServedCertificate(fingerprint, serial, _moment(not_after) if not_after is not None else None)
            entries[(name, target)] = _Verified(
                served,
                Expected(fingerprint, declaration),
                _moment(due),
                str(stamp) if stamp is not None else None,
            )
    except FileNotFoundError:
        return {}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        log.warning("verification schedule %s unreadable (%s): every target is probed again", path, exc)
        return {}
    return entries
