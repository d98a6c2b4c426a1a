"""``certreconcile agent enroll`` and ``certreconcile agent ca``: the applier's side of enrolment.

:func:`register` adds both commands to the ``agent`` sub-app (``cli/commands/agent.py``).
They need the state database; ``enroll`` needs the KMS too (it opens, or makes, the fleet CA).
Nothing they write is a secret: the agent's key never leaves its host, only its CSR comes here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from certreconcile.cli.common import DEFAULT_DIR, DirOption, cli_clock, err, fail, load_directory
from certreconcile.errors import CertReconcileError

__all__ = ["agent_ca", "agent_enroll", "register"]


def register(app: typer.Typer) -> None:
    """Add ``enroll`` and ``ca`` to the ``agent`` sub-app."""
    app.command("enroll")(agent_enroll)
    app.command("ca")(agent_ca)


def _write_public(path: Path, text: str) -> None:
    """Write a public PEM file (0644) atomically: a temporary name in the same directory, then rename."""
    temp = path.with_name(f".{path.name}.tmp")
    try:
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        temp.replace(path)
    except OSError as exc:
        raise CertReconcileError(
            f"cannot write {path}: {exc.strerror}", code="agent-write-failed", hint="choose a writable path"
        ) from exc


def _read_csr(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not PEM text"
        raise CertReconcileError(
            f"cannot read the CSR {path}: {why}",
            code="agent-csr-unreadable",
            hint="pass the CSR made on the agent's host",
        ) from exc


def agent_enroll(
    name: Annotated[str, typer.Argument(help="The agent's name, as in `agents:` (e.g. web-1).")],
    csr: Annotated[Path, typer.Option("--csr", help="The CSR made on the agent's host.", dir_okay=False)],
    out: Annotated[Path, typer.Option("--out", help="Where to write the agent's certificate (PEM).", dir_okay=False)],
    ca_out: Annotated[
        Path | None, typer.Option("--ca-out", help="Also write the fleet CA certificate here.", dir_okay=False)
    ] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Enrol an enrolled name again (a new key).")] = False,
    directory: DirOption = DEFAULT_DIR,
) -> None:
    """Sign the CSR of agent NAME with the fleet CA (made on first use, its key sealed by the KMS).

    The certificate names the agent by the URI SAN spiffe://certreconcile/agent/NAME, whatever the
    CSR asks. Copy it (and the fleet CA certificate) to the agent's host; the key stays there.

    Example: certreconcile agent enroll web-1 --csr web-1.csr --out web-1.crt --ca-out fleet-ca.crt
    """
    from certreconcile.fleet.enrol import enrol_agent
    from certreconcile.plugins.registry import create_kms
    from certreconcile.wiring import Settings, actor_for, open_store

    try:
        csr_pem = _read_csr(csr)
        desired = load_directory(directory)
        settings = Settings.from_env(directory)
        store = open_store(settings)
        kms = create_kms(desired.kms, settings.plugin_context)
        enrolment = enrol_agent(store, kms, name, csr_pem, cli_clock().now(), actor_for(desired, settings.env),
                                replace=replace)  # fmt: skip
        _write_public(out, enrolment.row.cert_pem)
        if ca_out is not None:
            _write_public(ca_out, enrolment.ca_pem)
    except CertReconcileError as exc:
        fail(exc)
    row = enrolment.row
    verb = "Re-enrolled" if enrolment.replaced else "Enrolled"
    typer.echo(f"{verb} agent {name}: serial {row.serial}, valid until {row.not_after:%Y-%m-%dT%H:%MZ}; "
               f"certificate written to {out}" + (f", fleet CA to {ca_out}" if ca_out else ""))  # fmt: skip


def agent_ca(
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the fleet CA certificate here instead of stdout.")
    ] = None,
    directory: DirOption = DEFAULT_DIR,
) -> None:
    """Print the fleet CA certificate (PEM): the trust anchor each agent's configuration names.

    Example: certreconcile agent ca --out /etc/certreconcile/fleet-ca.crt
    """
    from certreconcile.fleet.enrol import fleet_ca_pem
    from certreconcile.wiring import Settings, open_store

    try:
        pem = fleet_ca_pem(open_store(Settings.from_env(directory)))
        if out is not None:
            _write_public(out, pem)
    except CertReconcileError as exc:
        fail(exc)
    if out is None:
        typer.echo(pem, nl=False)
    else:
        err(f"fleet CA certificate written to {out}")
