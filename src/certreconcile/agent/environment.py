"""The agent never holds database or KMS settings: it refuses to start when its environment carries any.

Only the variables' names are ever shown, never their values.
"""

from __future__ import annotations

from collections.abc import Mapping

from certreconcile.errors import ConfigError

__all__ = ["FORBIDDEN_VARIABLES", "check_environment", "forbidden_settings"]

#: Variables that hold (or point at) a database login or a KMS credential.
FORBIDDEN_VARIABLES: tuple[str, ...] = (
    "CERTRECONCILE_DATABASE_URL",
    "DATABASE_URL",
    "PGPASSWORD",
    "PGPASSFILE",
    "CERTRECONCILE_LOCAL_KMS_KEY_FILE",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "VAULT_TOKEN",
    "BAO_TOKEN",
    "VAULT_ROLE_ID",
    "VAULT_SECRET_ID",
    "GOOGLE_OAUTH_ACCESS_TOKEN",
    "GOOGLE_APPLICATION_CREDENTIALS",
)


def forbidden_settings(env: Mapping[str, str]) -> list[str]:
    """The names of the forbidden variables set (non-empty) in ``env``, in a fixed order."""
    return [name for name in FORBIDDEN_VARIABLES if env.get(name, "").strip()]


def check_environment(env: Mapping[str, str]) -> None:
    """ConfigError (``agent-environment-forbidden``) naming every forbidden variable set in ``env``."""
    found = forbidden_settings(env)
    if found:
        raise ConfigError(
            f"the agent's environment holds database or KMS settings: {', '.join(found)}; "
            "the agent must never hold them",
            code="agent-environment-forbidden",
            hint="unset them in the agent's service (e.g. its systemd unit); only the applier needs them",
        )
