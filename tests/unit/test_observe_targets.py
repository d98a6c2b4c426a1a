"""observe_targets: in-memory targets are probed in the caller's thread, slow ones in the pool, same answers."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest

from certreconcile.actual.model import ServedCertificate
from certreconcile.actual.refresh import observe_targets
from certreconcile.plugins.ports import TargetObservation


@dataclass
class Memory:
    """Answers from a dict; records which thread asked."""

    answers: dict[str, TargetObservation]
    threads: set[str] = field(default_factory=set)

    def observe(self, name: str, domains: tuple[str, ...]) -> TargetObservation:
        self.threads.add(threading.current_thread().name)
        return self.answers.get(name, TargetObservation(fingerprint=None))


class Meeting:
    """Two names that answer only together (a barrier): probed one after the other, they never do."""

    def __init__(self, slow: str | None = None) -> None:
        self.barrier = threading.Barrier(2, timeout=5)
        self.slow = slow

    def observe(self, name: str, domains: tuple[str, ...]) -> TargetObservation:
        if name == self.slow:
            time.sleep(0.005)  # slower than the 1 ms a probe may take in the caller's thread
            return TargetObservation(fingerprint="slow")
        self.barrier.wait()
        return TargetObservation(fingerprint=name)


def _mixed() -> tuple[list[tuple[str, tuple[str, ...], str]], dict[str, Memory]]:
    answers = {
        "a": TargetObservation(fingerprint="fa", serial_number="01"),
        "b": TargetObservation(fingerprint=None, error="web: connection refused", unreachable=True),
        "c": TargetObservation(fingerprint=None, unknown=True),  # cannot tell: no observation
    }
    targets = {"web": Memory(dict(answers)), "edge": Memory({"a": TargetObservation(fingerprint="other")})}
    probes = [(name, (f"{name}.example",), target) for target in ("web", "edge", "gone") for name in "abcd"] * 40
    return probes, targets


@pytest.mark.parametrize("inline_below", [float("inf"), 0.0])
def test_the_answers_do_not_depend_on_the_thread(inline_below: float) -> None:
    probes, targets = _mixed()
    seen = observe_targets(probes, targets, inline_below=inline_below)
    assert seen.served == {
        ("a", "web"): ServedCertificate("fa", "01"),
        ("b", "web"): ServedCertificate(None, error="web: connection refused", unreachable=True),
        ("d", "web"): ServedCertificate(None),
        ("a", "edge"): ServedCertificate("other"),
        ("b", "edge"): ServedCertificate(None),
        ("c", "edge"): ServedCertificate(None),
        ("d", "edge"): ServedCertificate(None),
    }
    assert seen.for_name("a") == {"web": ServedCertificate("fa", "01"), "edge": ServedCertificate("other")}
    assert seen.for_name("c") == {"edge": ServedCertificate(None)}  # web could not tell
    assert seen.for_name("gone") == {}
    threads = set().union(*(target.threads for target in targets.values()))
    if inline_below == float("inf"):
        assert threads == {threading.current_thread().name}  # from memory: never handed to a thread
    else:
        assert threading.current_thread().name in threads  # the first probe, timed here
        assert len(threads) > 1  # the rest in the pool


def test_probes_slower_than_memory_go_to_the_threads() -> None:
    targets = {"m": Memory({}), "meet": Meeting()}
    probes = [("first", ("first.example",), "m"), ("p", (), "meet"), ("q", (), "meet")]
    seen = observe_targets(probes, targets, workers=2, inline_below=0.0)  # the first probe is "slow"
    assert seen.served[("p", "meet")] == ServedCertificate("p")
    assert seen.served[("q", "meet")] == ServedCertificate("q")


def test_a_slow_target_among_memory_ones_sends_the_rest_to_the_threads() -> None:
    meeting = Meeting(slow="s")
    memory = Memory({"m1": TargetObservation(fingerprint="f1")})
    probes = [("m1", (), "mem"), ("m2", (), "mem"), ("s", (), "meet"), ("p", (), "meet"), ("q", (), "meet")]
    seen = observe_targets(probes, {"mem": memory, "meet": meeting}, workers=2, inline_below=1e-3)
    assert memory.threads == {threading.current_thread().name}
    assert seen.served[("s", "meet")] == ServedCertificate("slow")
    assert (seen.served[("p", "meet")], seen.served[("q", "meet")]) == (ServedCertificate("p"), ServedCertificate("q"))


def test_all_inline_would_not_meet() -> None:
    """The check of the two tests above: probed one after the other, the meeting names never answer."""
    meeting = Meeting()
    meeting.barrier = threading.Barrier(2, timeout=0.2)
    with pytest.raises(threading.BrokenBarrierError):
        observe_targets([("p", (), "meet"), ("q", (), "meet")], {"meet": meeting}, inline_below=float("inf"))
