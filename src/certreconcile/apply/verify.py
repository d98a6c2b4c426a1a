"""Wait until a target serves what was just deployed: moved to :mod:`certreconcile.plugins.targets.wait`
(the agent uses it too, and never imports ``apply``); re-exported here for the applier's imports."""

from __future__ import annotations

from certreconcile.plugins.targets.wait import VerifyOutcome, wait_until_served

__all__ = ["VerifyOutcome", "wait_until_served"]
