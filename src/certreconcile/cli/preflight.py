"""Checks ``plan`` and ``apply`` make on a built plan before anything is issued."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from certreconcile.desired.env_check import unset_env_diagnostics
from certreconcile.desired.model import DesiredState
from certreconcile.errors import DesiredStateError
from certreconcile.plan import Action, Plan

__all__ = ["check_environment", "plugins_used", "with_unset_environment_warnings"]


def plugins_used(plan: Plan, desired: DesiredState) -> set[tuple[str, str]]:
    """``(section, name)`` of every plugin applying ``plan`` calls: the issuer (and DNS provider)
    of each issue, rotate and revoke, and the targets deployed to.

    Not the KMS: plan needs no KMS credentials (README), and apply meets a KMS without them when
    it seals the new key, before the CA is asked for anything."""
    used: set[tuple[str, str]] = set()
    for change in plan.changes:
        if change.action is Action.RETIRE:
            continue
        used.update(("targets", target) for target in change.targets)
        if change.action in (Action.ISSUE, Action.ROTATE, Action.REVOKE) and change.issuer is not None:
            used.add(("issuers", change.issuer))
            spec = desired.certificates.get(change.name)
            if spec is not None and spec.dns_provider is not None and change.action is not Action.REVOKE:
                used.add(("dns_providers", spec.dns_provider))
    return used


def check_environment(directory: Path, desired: DesiredState, plan: Plan, env: Mapping[str, str]) -> None:
    """Refuse, with every unset variable positioned in the files, when the plan needs a ``*_env`` secret
    that ``env`` lacks."""
    diagnostics = unset_env_diagnostics(desired, plugins_used(plan, desired), env, directory)
    if diagnostics:
        error = DesiredStateError(list(diagnostics), f"{len(diagnostics)} environment variable(s) are not set")
        error.hint = "set the variables listed above where plan and apply run, then plan again"
        raise error


def with_unset_environment_warnings(directory: Path, desired: DesiredState, plan: Plan, env: Mapping[str, str]) -> Plan:
    """``plan --allow-unset-secrets``: the same findings as warnings (a pull-request job has no secrets);
    apply still refuses them."""
    diagnostics = unset_env_diagnostics(desired, plugins_used(plan, desired), env, directory)
    if not diagnostics:
        return plan
    notes = tuple(f"{diagnostic} (apply will refuse this plan until it is set)" for diagnostic in diagnostics)
    return replace(plan, warnings=(*plan.warnings, *notes))
