"""``certreconcile agent``: the agent on a server host (serve, csr); the applier's side adds enroll and ca.

The agent holds no database URL and no KMS credentials: it refuses to start when its environment
carries any. Its local configuration file is documented in :mod:`certreconcile.agent.config`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from certreconcile.cli.commands.agent_enroll import register as register_enrolment
from certreconcile.cli.common import err, fail
from certreconcile.cli.exit_codes import ExitCode
from certreconcile.cli.logging_setup import LogFormat, LogFormatOption, LogLevel, LogLevelOption, configure_logging
from certreconcile.errors import CertReconcileError

__all__ = ["agent_app"]

ConfigOption = Annotated[
    Path,
    typer.Option(
        "--config",
        "-c",
        help="The agent's local configuration file (YAML), e.g. /etc/certreconcile/agent.yaml.",
        dir_okay=False,
    ),
]

agent_app = typer.Typer(
    help=(
        "The agent on a server host: receives bundles from the applier over mutual TLS and deploys them into "
        "the local targets of its own configuration file. It holds no database URL and no KMS credentials.\n\n"
        "Examples:\n\n"
        "  certreconcile agent --config /etc/certreconcile/agent.yaml\n\n"
        "  certreconcile agent csr --config /etc/certreconcile/agent.yaml --out web-1.csr"
    ),
    invoke_without_command=True,
    no_args_is_help=False,
)


def _fail(exc: CertReconcileError) -> None:
    diagnostics = getattr(exc, "diagnostics", None)
    if diagnostics:
        for diagnostic in diagnostics:
            err(str(diagnostic))
        err(f"error[{exc.code}]: {len(diagnostics)} problem(s) in the agent configuration ({exc.hint})")
        raise typer.Exit(ExitCode.ERROR)
    fail(exc)


def _serve(config: Path, log_level: LogLevel, log_format: LogFormat) -> None:
    from certreconcile.agent.service import serve

    configure_logging(log_level, log_format)
    try:
        serve(config, os.environ)
    except CertReconcileError as exc:
        _fail(exc)


@agent_app.callback()
def agent_main(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="Serve with this configuration file (the same as `agent serve --config FILE`).",
            dir_okay=False,
        ),
    ] = None,
    log_level: LogLevelOption = LogLevel.INFO,
    log_format: LogFormatOption = LogFormat.TEXT,
) -> None:
    """Run the agent (`--config FILE`), or one of the commands below."""
    if ctx.invoked_subcommand is not None:
        return
    if config is None:
        err(ctx.get_help())
        err("error[agent-config-invalid]: pass --config FILE (the agent's local configuration)")
        raise typer.Exit(ExitCode.ERROR)
    _serve(config, log_level, log_format)


@agent_app.command("serve")
def agent_serve(
    config: ConfigOption, log_level: LogLevelOption = LogLevel.INFO, log_format: LogFormatOption = LogFormat.TEXT
) -> None:
    """Serve until SIGTERM or SIGINT (requests in flight finish); SIGHUP re-reads the configuration.

    Refuses to start (exit 1) when the environment holds database or KMS settings, when the
    configuration is invalid (each problem at file:line:column), or when the agent's certificate is
    not its key's or does not carry its name.

    Example: certreconcile agent serve --config /etc/certreconcile/agent.yaml --log-format json
    """
    _serve(config, log_level, log_format)


@agent_app.command("csr")
def agent_csr_command(
    config: ConfigOption,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write the CSR (PEM) to this file, not to standard output.", dir_okay=False),
    ] = None,
) -> None:
    """Make the agent's key (EC P-256, mode 0600, at tls.key_file) unless it exists, and print a CSR signed by it.

    An existing key is reused, never overwritten or moved. The CSR names the agent
    (CN=<name>, URI SAN spiffe://certreconcile/agent/<name>); sign it on the applier's side
    with `certreconcile agent enroll NAME --csr FILE`, then put the certificate at tls.cert_file.

    Example: certreconcile agent csr --config /etc/certreconcile/agent.yaml --out web-1.csr
    """
    from certreconcile.agent.config import load_agent_config
    from certreconcile.agent.identity import agent_csr, ensure_key

    try:
        settings = load_agent_config(config)
        key, made = ensure_key(settings.tls.key_file)
    except CertReconcileError as exc:
        _fail(exc)
        return
    csr_pem = agent_csr(key, settings.name)
    err(f"{'made the key' if made else 'reused the key'} {settings.tls.key_file}")
    if out is None:
        sys.stdout.write(csr_pem)
    else:
        out.write_text(csr_pem, encoding="ascii")
        err(f"wrote the CSR of agent {settings.name!r} to {out}")


# ---- the applier's side: `agent enroll` and `agent ca` (cli/commands/agent_enroll.py).
register_enrolment(agent_app)
