"""The verification schedule of `run` (actual/schedule.py): which pairs are probed, which reuse their last read."""

from __future__ import annotations

import os
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from certreconcile.actual.schedule import Expected, VerificationSchedule
from certreconcile.plugins.ports import TargetObservation

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
PROBES = [("shop", ("shop.example.test",), "web"), ("api", ("api.example.test",), "web")]


class Served:
    """A target serving a fixed fingerprint per name; counts its probes. ``files``: the read-back files it reports."""

    def __init__(self, served: dict[str, str | None], files: dict[str, Path] | None = None) -> None:
        self.served = served
        self.files = files
        self.probed: list[str] = []
        self.error: str | None = None
        self.unreachable = False

    def observe(self, name: str, domains: tuple[str, ...]) -> TargetObservation:
        self.probed.append(name)
        return TargetObservation(self.served[name], "01", NOW, self.error, unreachable=self.unreachable)


class ReadsBack(Served):
    def read_back_files(self, name: str) -> tuple[str, ...] | None:
        assert self.files is not None
        return (str(self.files[name]),)


def expected(shop: str = "fp-shop", declaration: str = "decl") -> dict[tuple[str, str], Expected]:
    return {("shop", "web"): Expected(shop, declaration), ("api", "web"): Expected("fp-api", declaration)}


def probe(schedule: VerificationSchedule, target: Served, now: datetime = NOW, **kwargs: str) -> list[str]:
    target.probed.clear()
    observations = schedule.observe(PROBES, {"web": target}, expected(**kwargs), now)
    assert set(observations.served) == {("shop", "web"), ("api", "web")}  # every pair has an observation
    return sorted(target.probed)


def test_a_verified_pair_is_reused_until_due_and_never_before_every() -> None:
    target = Served({"shop": "fp-shop", "api": "fp-api"})
    schedule = VerificationSchedule(timedelta(hours=1), jitter=0.1, rng=random.Random(7))
    assert probe(schedule, target) == ["api", "shop"]
    assert probe(schedule, target, NOW + timedelta(minutes=59, seconds=59)) == []
    assert (schedule.probed, schedule.reused) == (0, 2)
    assert probe(schedule, target, NOW + timedelta(minutes=66)) == ["api", "shop"]  # 1 h + at most 10%


def test_jitter_spreads_the_next_verifications() -> None:
    target = Served({"shop": "fp-shop", "api": "fp-api"})
    schedule = VerificationSchedule(timedelta(hours=1), jitter=0.1, rng=random.Random(1))
    probe(schedule, target)
    probed_at = {}
    for minute in range(60, 67):
        for name in probe(schedule, target, NOW + timedelta(minutes=minute)):
            probed_at.setdefault(name, minute)
    assert len(probed_at) == 2
    assert len(set(probed_at.values())) == 2  # not at the same moment


@pytest.mark.parametrize("change", [{"shop": "fp-shop-renewed"}, {"declaration": "decl-2"}])
def test_a_new_stored_certificate_or_declaration_makes_the_pair_due(change: dict[str, str]) -> None:
    target = Served({"shop": "fp-shop", "api": "fp-api"})
    schedule = VerificationSchedule()
    probe(schedule, target)
    due = probe(schedule, target, **change)
    assert due == (["shop"] if "shop" in change else ["api", "shop"])


@pytest.mark.parametrize("fault", ["drift", "error", "unreachable"])
def test_only_verified_observations_are_reused(fault: str) -> None:
    target = Served({"shop": "fp-other" if fault == "drift" else "fp-shop", "api": "fp-api"})
    target.error = "broken" if fault == "error" else None
    target.unreachable = fault == "unreachable"
    schedule = VerificationSchedule()
    probe(schedule, target)
    assert "shop" in probe(schedule, target)  # probed every cycle, as before the schedule


def test_forget_makes_a_name_due() -> None:
    target = Served({"shop": "fp-shop", "api": "fp-api"})
    schedule = VerificationSchedule()
    probe(schedule, target)
    schedule.forget(["shop"])
    assert probe(schedule, target) == ["shop"]


def test_files_are_stat_ed_before_parsing(tmp_path: Path) -> None:
    files = {name: tmp_path / f"{name}.pem" for name in ("shop", "api")}
    for path in files.values():
        path.write_text("x")
    target = ReadsBack({"shop": "fp-shop", "api": "fp-api"}, files)
    schedule = VerificationSchedule()
    probe(schedule, target)
    assert probe(schedule, target) == []
    files["shop"].write_text("changed")  # another size
    assert probe(schedule, target) == ["shop"]
    stamp = files["api"].stat()
    os.utime(files["api"], ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 1))  # same size, touched
    assert probe(schedule, target) == ["api"]
    files["shop"].unlink()
    assert probe(schedule, target) == ["shop"]


def test_the_schedule_is_kept_in_its_file_between_processes(tmp_path: Path) -> None:
    path = tmp_path / "data" / "verification-schedule.json"
    target = Served({"shop": "fp-shop", "api": "fp-api"})
    first = VerificationSchedule(path=path)
    probe(first, target)
    first.save()
    assert "fp-shop" in path.read_text()
    assert probe(VerificationSchedule(path=path), target) == []
    assert probe(VerificationSchedule(path=path), target, NOW + timedelta(hours=2)) == ["api", "shop"]


def test_an_unreadable_schedule_file_means_probing_everything(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "verification-schedule.json"
    path.write_text('{"format": 3, "pairs": [["shop"]]}')
    target = Served({"shop": "fp-shop", "api": "fp-api"})
    assert probe(VerificationSchedule(path=path), target) == ["api", "shop"]
    assert "unreadable" in caplog.text


@pytest.mark.parametrize(("text", "seconds"), [("1h", 3600.0), ("90s", 90.0), ("0", 0.0), ("0.0", 0.0), ("30", 30.0)])
def test_verify_every_forms(text: str, seconds: float) -> None:
    from certreconcile.cli.commands.run import parse_verify_every

    assert parse_verify_every(text) == seconds


@pytest.mark.parametrize("text", ["-1", "soon", ""])
def test_bad_verify_every_is_a_usage_error(text: str) -> None:
    from certreconcile.cli.commands.run import parse_verify_every
    from certreconcile.errors import CertReconcileError

    with pytest.raises(CertReconcileError) as caught:
        parse_verify_every(text)
    assert caught.value.code == "usage"
    assert "--verify-every" in caught.value.message
