"""--log-level / --log-format of the long-running commands: JSON lines with the documented fields only."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest

from certreconcile.cli.logging_setup import configure_logging
from certreconcile.logcontext import LOG_FIELDS, current_log_fields, in_log_context, log_context


class Stderr:
    """What the handlers wrote to ``sys.stderr`` (they write to the current one: pytest's capture)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.text = ""

    def getvalue(self) -> str:
        self.text += self.capsys.readouterr().err
        return self.text


@pytest.fixture
def stderr(capsys: pytest.CaptureFixture[str]) -> Iterator[Stderr]:
    ours, root = logging.getLogger("certreconcile"), logging.getLogger()
    saved = (ours.handlers[:], ours.level, ours.propagate, root.handlers[:], root.level)
    try:
        yield Stderr(capsys)
    finally:
        ours.handlers[:], ours.level, ours.propagate = saved[0], saved[1], saved[2]
        root.handlers[:], root.level = saved[3], saved[4]


def json_lines(buffer: Stderr) -> list[dict[str, str]]:
    return [json.loads(line) for line in buffer.getvalue().splitlines()]


def test_json_lines_carry_the_context_fields_and_the_call_s_extra(stderr: Stderr) -> None:
    configure_logging("info", "json")
    log = logging.getLogger("certreconcile.apply")
    with log_context(certificate="shop", issuer="le", step="rotate"):
        log.info("shop: issued serial %s", "0a1b", extra={"serial": "0a1b"})
        with log_context(target="web", step="deploy"):
            log.info("deploying")
    log.info("outside")
    first, second, third = json_lines(stderr)
    assert first["message"] == "shop: issued serial 0a1b"
    assert (first["level"], first["logger"]) == ("info", "certreconcile.apply")
    assert {k: first[k] for k in ("certificate", "issuer", "step", "serial")} == {
        "certificate": "shop", "issuer": "le", "step": "rotate", "serial": "0a1b",
    }  # fmt: skip
    assert first["timestamp"].endswith("Z") and "T" in first["timestamp"]
    assert (second["target"], second["step"], second["certificate"]) == ("web", "deploy", "shop")
    assert "serial" not in second  # the extra= of one call is that call's only
    assert set(third) == {"timestamp", "level", "logger", "message"}  # the context ended with its block


def test_only_the_allow_listed_fields_and_no_traceback_are_written(stderr: Stderr) -> None:
    configure_logging("debug", "json")
    log = logging.getLogger("certreconcile.run")
    secret = "canary-secret-value-1234567890"
    try:
        raise ValueError(secret)
    except ValueError:
        log.exception("it failed", extra={"password": secret, "token": secret, "certificate": "api"})
    text = stderr.getvalue()
    assert secret not in text
    (line,) = json_lines(stderr)
    assert line["exception"] == "ValueError"
    assert set(line) - {"timestamp", "level", "logger", "message", "exception"} == {"certificate"}
    with pytest.raises(ValueError, match="not a log field"), log_context(password=secret):
        pass


def test_the_level_filters_our_lines_and_libraries_write_warnings_in_the_same_format(stderr: Stderr) -> None:
    configure_logging("warning", "json")
    logging.getLogger("certreconcile.run").info("hidden")
    logging.getLogger("certreconcile.run").warning("shown")
    logging.getLogger("urllib3.connectionpool").info("library chatter")
    logging.getLogger("urllib3.connectionpool").warning("library warning")
    assert [(line["logger"], line["message"]) for line in json_lines(stderr)] == [
        ("certreconcile.run", "shown"),
        ("urllib3.connectionpool", "library warning"),
    ]


def test_text_keeps_the_plain_lines_and_reconfiguring_replaces_the_handler(stderr: Stderr) -> None:
    configure_logging("info", "json")
    configure_logging("debug", "text")  # a second call replaces the first handler: one line per record
    with log_context(certificate="shop"):
        logging.getLogger("certreconcile.run").debug("cycle success: 1 done")
    (line,) = stderr.getvalue().splitlines()
    assert line.endswith(" DEBUG cycle success: 1 done")
    assert not line.startswith("{")


def test_fields_follow_a_change_into_a_thread_pool(stderr: Stderr) -> None:
    configure_logging("info", "json")
    log = logging.getLogger("certreconcile.apply")

    def push(target: str) -> str:
        with log_context(target=target):
            log.info("pushed")
        return current_log_fields().get("certificate", "")

    with log_context(certificate="shop", serial="0a"), ThreadPoolExecutor(max_workers=2) as pool:
        bound = in_log_context(push)
        seen = list(pool.map(bound, ["web", "edge"]))
    bare = threading.Thread(target=lambda: log.info("unbound"))
    bare.start()
    bare.join()
    assert seen == ["shop", "shop"]
    lines = json_lines(stderr)
    assert sorted((line["certificate"], line["serial"], line["target"]) for line in lines[:2]) == [
        ("shop", "0a", "edge"),
        ("shop", "0a", "web"),
    ]
    assert "certificate" not in lines[2]  # a plain thread does not inherit the fields


def test_the_documented_fields() -> None:
    assert {"certificate", "serial", "issuer", "step"} <= set(LOG_FIELDS)
