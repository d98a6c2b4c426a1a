"""Exit codes, as in the CLI contract (design §6). Scripts rely on these numbers."""

from __future__ import annotations

import enum

__all__ = ["ExitCode"]


class ExitCode(enum.IntEnum):
    OK = 0  # success; for plan --detailed-exitcode: no changes
    ERROR = 1  # invalid input, a failed change, a refused (stale) plan, any error
    CHANGES = 2  # plan --detailed-exitcode only: the plan has changes
