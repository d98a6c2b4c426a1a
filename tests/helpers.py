"""Helpers shared by the test suites (import as ``from helpers import ...``)."""

from __future__ import annotations

import os
import shutil

import pytest
from psycopg.conninfo import make_conninfo

__all__ = ["require_binary", "with_database"]


def require_binary(name: str) -> str:
    """The path of executable ``name``; skip the test without it, but fail on CI (``CI`` set).

    A skipped integration test on CI would hide a broken pipeline, so there a missing
    binary is an error.
    """
    path = shutil.which(name)
    if path is not None:
        return path
    reason = f"{name} is not installed (not found on PATH)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must provide it", pytrace=False)
    pytest.skip(reason)


def with_database(url: str, database: str) -> str:
    """``url`` pointing at another database (a libpq key=value string)."""
    return make_conninfo(url, dbname=database)
