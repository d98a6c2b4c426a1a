"""GroupCommit: deployments to one server that arrive together share one test and one reload.

The real nginx with many targets is in tests/integration/test_targets_nginx_haproxy.py and
bench/distribution.py; here the server is two counters and the files on disk.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from certreconcile.errors import TargetError
from certreconcile.plugins.targets.safe_files import FileContent, FileSet
from certreconcile.plugins.targets.server_control import GroupCommit, ServerActions

INSTANCE = ("nginx.pid",)


class FakeServer:
    """A server whose configuration test fails while any file under ``root`` holds ``b"bad"``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.checks = 0
        self.reloads = 0
        self.gate = threading.Event()  # the first test waits for it
        self.gate.set()

    def actions(self, target: str) -> ServerActions:
        def check() -> None:
            self.gate.wait(10)
            self.checks += 1
            if any(path.read_bytes() == b"bad" for path in self.root.rglob("*.pem")):
                raise TargetError(f"target {target}: configuration test failed", code="target-config-test-failed")

        def reload() -> None:
            self.reloads += 1

        return ServerActions(server="fake", lock=contextlib.nullcontext, check=check, reload=reload)


def files(root: Path, name: str, content: bytes) -> FileSet:
    return FileSet(
        "t",
        root,
        {f"{name}/fullchain.pem": FileContent(content, 0o644), f"{name}/privkey.pem": FileContent(content, 0o600)},
    )


def wait_for_pending(group: GroupCommit, count: int) -> None:
    deadline = time.monotonic() + 10
    while len(group._pending.get(INSTANCE, [])) < count:
        assert time.monotonic() < deadline, "deployments never queued"
        time.sleep(0.005)


def wait_for_leader(group: GroupCommit) -> None:
    deadline = time.monotonic() + 10
    while INSTANCE not in group._leading:
        assert time.monotonic() < deadline, "no batch started"
        time.sleep(0.005)


@pytest.fixture
def server(tmp_path: Path) -> FakeServer:
    return FakeServer(tmp_path)


def test_deployments_arriving_together_share_one_test_and_one_reload(server: FakeServer) -> None:
    group = GroupCommit()
    server.gate.clear()  # hold the first batch in its test until the other 15 have queued
    with ThreadPoolExecutor(16) as pool:
        first = pool.submit(group.deploy, INSTANCE, files(server.root, "b00", b"ok"), server.actions("b00"))
        wait_for_leader(group)
        rest = [
            pool.submit(group.deploy, INSTANCE, files(server.root, f"b{i:02}", b"ok"), server.actions(f"b{i:02}"))
            for i in range(1, 16)
        ]
        wait_for_pending(group, 15)
        server.gate.set()
        for future in [first, *rest]:
            assert future.result(timeout=10) is None
    assert (server.checks, server.reloads) == (2, 2)  # the first alone, then the 15 together
    assert sorted(path.parent.name for path in server.root.rglob("privkey.pem")) == [f"b{i:02}" for i in range(16)]
    assert {oct(path.stat().st_mode & 0o777) for path in server.root.rglob("privkey.pem")} == {"0o600"}


def test_a_failing_batch_is_retried_one_by_one_and_only_the_culprit_fails(server: FakeServer) -> None:
    group = GroupCommit()
    (server.root / "b03").mkdir()
    (server.root / "b03" / "fullchain.pem").write_bytes(b"old")
    server.gate.clear()
    contents = {f"b{i:02}": b"bad" if i == 3 else b"ok" for i in range(6)}
    with ThreadPoolExecutor(6) as pool:
        first = pool.submit(group.deploy, INSTANCE, files(server.root, "b00", b"ok"), server.actions("b00"))
        wait_for_leader(group)
        rest = {
            name: pool.submit(group.deploy, INSTANCE, files(server.root, name, content), server.actions(name))
            for name, content in contents.items()
            if name != "b00"
        }
        wait_for_pending(group, 5)
        server.gate.set()
        assert first.result(timeout=10) is None
        for name, future in rest.items():
            error = future.exception(timeout=10)
            if name != "b03":
                assert error is None, (name, error)
                continue
            assert isinstance(error, TargetError)
            assert error.message == "target b03: configuration test failed (previous files restored, fake not reloaded)"
    # b00 alone (1 test), the batch of five (1 failed test), then each of the five alone (5 tests)
    assert server.checks == 7
    assert server.reloads == 5  # b00, then the four good ones one by one
    assert (server.root / "b03" / "fullchain.pem").read_bytes() == b"old"
    assert not (server.root / "b03" / "privkey.pem").exists()
    assert all((server.root / name / "privkey.pem").read_bytes() == b"ok" for name in contents if name != "b03")


def test_a_symlinked_folder_fails_its_own_deployment_only(server: FakeServer, tmp_path: Path) -> None:
    group = GroupCommit()
    outside = tmp_path / "outside"
    outside.mkdir()
    (server.root / "b02").symlink_to(outside)
    server.gate.clear()
    with ThreadPoolExecutor(5) as pool:
        first = pool.submit(group.deploy, INSTANCE, files(server.root, "b00", b"ok"), server.actions("b00"))
        wait_for_leader(group)
        rest = {
            name: pool.submit(group.deploy, INSTANCE, files(server.root, name, b"ok"), server.actions(name))
            for name in ("b01", "b02", "b03", "b04")
        }
        wait_for_pending(group, 4)
        server.gate.set()
        assert first.result(timeout=10) is None
        errors = {name: future.exception(timeout=10) for name, future in rest.items()}
    refused = errors.pop("b02")
    assert isinstance(refused, TargetError) and refused.code == "target-path-unsafe"
    assert errors == {"b01": None, "b03": None, "b04": None}
    assert list(outside.iterdir()) == []
    assert server.reloads == 4  # b00, then b01, b03, b04 one by one (the batch never reached its test)


def test_a_lock_that_cannot_be_taken_fails_every_deployment_of_the_batch(server: FakeServer) -> None:
    @contextlib.contextmanager
    def broken_lock() -> Iterator[None]:
        raise OSError(13, "Permission denied")
        yield  # pragma: no cover

    actions = ServerActions(server="fake", lock=broken_lock, check=lambda: None, reload=lambda: None)
    with pytest.raises(OSError, match="Permission denied"):
        GroupCommit().deploy(INSTANCE, files(server.root, "shop", b"ok"), actions)
    assert not list(server.root.rglob("*.pem"))


def test_a_failed_batch_reload_is_reported_by_each_target(server: FakeServer) -> None:
    group = GroupCommit()
    server.gate.clear()

    def failing_reload(target: str) -> ServerActions:
        def reload() -> None:
            raise TargetError(f"target {target}: reload failed: no such process", code="target-reload-failed")

        return ServerActions(
            server="fake", lock=contextlib.nullcontext, check=server.actions(target).check, reload=reload
        )

    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(group.deploy, INSTANCE, files(server.root, "a", b"ok"), server.actions("a"))
        wait_for_leader(group)
        rest = {
            name: pool.submit(group.deploy, INSTANCE, files(server.root, name, b"ok"), failing_reload(name))
            for name in ("b", "c")
        }
        wait_for_pending(group, 2)
        server.gate.set()
        assert first.result(timeout=10) is None
        for name, future in rest.items():
            error = future.exception(timeout=10)
            assert isinstance(error, TargetError) and error.message == f"target {name}: reload failed: no such process"
