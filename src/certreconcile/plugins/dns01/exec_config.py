"""The ``exec`` DNS-01 provider kind (lego's ``exec``): its configuration and its factory."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

from pydantic import Field

from certreconcile.desired.fields import (
    ENV_NAME_PATTERN,
    Duration,
    FsPath,
    ParsedDuration,
    Wire,
)
from certreconcile.plugins.dns01 import propagation_waiter

if TYPE_CHECKING:
    from certreconcile.desired.model import PluginSpec
    from certreconcile.plugins.ports import Dns01Provider
    from certreconcile.plugins.registry import PluginContext


__all__ = ["SUMMARY", "Config", "create"]

EnvName = Annotated[str, Field(pattern=ENV_NAME_PATTERN)]

SUMMARY = "An external program called like lego's exec provider (present|cleanup FQDN VALUE)."


class ExecConfig(Wire):
    """DNS-01 through an external program, called as lego's ``exec`` provider calls it.

    The program runs without a shell as ``PROGRAM present FQDN VALUE`` and ``PROGRAM cleanup
    FQDN VALUE`` (FQDN with its final dot, e.g. ``_acme-challenge.example.com.``) and must exit
    0 once the record is added (removed). Its environment is small: PATH, HOME, LANG, the
    ``EXEC_*`` variables lego sets, ``env`` and the variables named in ``pass_env``.
    """

    program: FsPath = Field(min_length=1)
    """The program (an executable file); a relative path is relative to the desired-state directory."""
    timeout: Duration = ParsedDuration("60s")
    """How long one run may take before it is killed (with its children)."""
    env: dict[EnvName, str] = Field(default_factory=dict)
    """Fixed variables for the program (never secrets: they are part of the declaration)."""
    pass_env: tuple[EnvName, ...] = ()
    """Names of certreconcile's environment variables passed to the program (its credentials)."""



Config = ExecConfig


def create(spec: PluginSpec, context: PluginContext) -> Dns01Provider:
    from certreconcile.plugins.dns01 import propagation_settings
    from certreconcile.plugins.dns01.exec_program import ExecProvider
    from certreconcile.plugins.paths import declared_path

    assert isinstance(spec.config, ExecConfig)
    timeout, _ = propagation_settings(spec)
    return ExecProvider(
        spec.name,
        spec.config,
        program=declared_path(spec.config.program, context.desired_dir),
        env=context.env,
        propagation=propagation_waiter(spec),
        propagation_timeout=timeout,
    )
