"""The Apprise sink silences urllib3 and apprise while it sends, from any number of threads at once.

Loggers are process-wide: with two senders in flight (two replicas, or the outbox and a cycle), the
first one out must not let the other's lines through (urllib3's debug lines name each request's path,
which carries the token), and the last one out must give the loggers back as they were.
"""

from __future__ import annotations

import logging
import threading

from certreconcile.notify.apprise_sink import _quiet


def silenced(name: str) -> bool:
    logger = logging.getLogger(name)
    return logger.getEffectiveLevel() > logging.CRITICAL and not logger.propagate


def test_overlapping_senders_keep_the_logger_silent_until_the_last_one_leaves() -> None:
    logger = logging.getLogger("urllib3")
    before = (logger.level, logger.propagate)
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    seen: dict[str, bool] = {}

    def first() -> None:
        with _quiet("urllib3"):
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with _quiet("urllib3"):
            second_in.set()
            first_out.wait(5)
            seen["after the first left"] = silenced("urllib3")
            seen["a child logger"] = logging.getLogger("urllib3.connectionpool").getEffectiveLevel() > logging.CRITICAL

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert seen == {"after the first left": True, "a child logger": True}
    assert (logger.level, logger.propagate) == before  # given back as it was, not left silenced


def test_a_sender_that_fails_gives_the_logger_back() -> None:
    logger = logging.getLogger("apprise")
    before = (logger.level, logger.propagate)
    try:
        with _quiet("apprise"):
            assert silenced("apprise")
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert (logger.level, logger.propagate) == before
