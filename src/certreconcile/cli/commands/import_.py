"""``certreconcile import``: adopt an existing certificate into the state (:mod:`certreconcile.adopt`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from certreconcile.cli.common import DEFAULT_DIR, DirOption, cli_clock, fail, load_directory
from certreconcile.cli.formats import FormatOption, OutputFormat
from certreconcile.errors import CertReconcileError

if TYPE_CHECKING:
    from certreconcile.adopt import Adopted, ImportResult
    from certreconcile.desired.model import CertificateSpec, DesiredState
    from certreconcile.wiring import Settings

__all__ = ["import_"]



def _usage(message: str) -> CertReconcileError:
    return CertReconcileError(message, code="usage", hint="see `certreconcile import --help`")


_Files = tuple[Path | None, Path | None, Path | None]  # --cert, --key, --chain


def _source(
    spec: CertificateSpec,
    desired: DesiredState,
    settings: Settings,
    files: _Files,
    from_dir: Path | None,
    from_target: str | None,
) -> Adopted:
    from certreconcile.adopt import from_directory, from_files

    cert, key, chain = files
    if sum(x is not None for x in (cert, from_dir, from_target)) != 1:
        raise _usage(
            "give exactly one source: --cert FILE --key FILE, --from-dir DIR, or --from-target TARGET --key FILE"
        )
    if from_dir is not None:
        if key is not None or chain is not None:
            raise _usage("--from-dir reads the key and chain from the directory: drop --key and --chain")
        return from_directory(from_dir, spec)
    if key is None:
        raise _usage("--key FILE is needed with " + ("--cert" if cert is not None else "--from-target"))
    if cert is not None:
        return from_files(cert, key, chain)
    assert from_target is not None
    return _from_target(spec, desired, settings, from_target, key)


def _from_target(spec: CertificateSpec, desired: DesiredState, settings: Settings, name: str, key: Path) -> Adopted:
    from certreconcile.adopt import from_target as read_target
    from certreconcile.desired.model import AGENT_TARGET_KIND
    from certreconcile.plugins.registry import create_target

    target_spec = desired.targets.get(name)
    if target_spec is None:
        raise CertReconcileError(f"target {name!r} is not declared", code="name-unknown",
                                 hint=f"declared targets: {', '.join(desired.targets) or 'none'}")  # fmt: skip
    folder = None
    if target_spec.kind != AGENT_TARGET_KIND:
        target = create_target(target_spec, settings.plugin_context)
        folder_of = getattr(target, "folder", None)
        folder = folder_of(spec.name) if callable(folder_of) else None
    return read_target(name, target_spec, folder, spec, key)


def _print(result: ImportResult, output_format: str) -> None:
    facts = result.facts
    if output_format == "json":
        payload = {
            "format_version": 1,
            "name": result.name,
            "cert_id": result.cert_id,
            "status": result.status.value,
            "serial": facts.serial_number,
            "fingerprint": facts.fingerprint,
            "not_before": facts.not_before.isoformat(),
            "not_after": facts.not_after.isoformat(),
            "verified_on": list(result.verified_on),
            "pending_targets": list(result.pending_targets),
        }
        typer.echo(json.dumps(payload, indent=2, sort_keys=True))
        return
    typer.echo(f"imported {result.name}: serial {facts.serial_number}, valid {facts.not_before:%Y-%m-%d} to "
               f"{facts.not_after:%Y-%m-%d %H:%M} UTC, {result.status.value}")  # fmt: skip
    if result.verified_on:
        typer.echo(f"  served by: {', '.join(result.verified_on)}")
    if result.pending_targets:
        typer.echo(f"  the next apply deploys it to: {', '.join(result.pending_targets)}")


def import_(
    name: Annotated[str, typer.Argument(help="The declared certificate to adopt the certificate for.")],
    directory: DirOption = DEFAULT_DIR,
    cert: Annotated[
        Path | None,
        typer.Option("--cert", dir_okay=False, show_default=False, help="PEM certificate (leaf, or leaf + chain)."),
    ] = None,
    key: Annotated[
        Path | None,
        typer.Option("--key", dir_okay=False, show_default=False, help="Its PEM private key (unencrypted)."),
    ] = None,
    chain: Annotated[
        Path | None,
        typer.Option("--chain", dir_okay=False, show_default=False, help="PEM intermediates, when not in --cert."),
    ] = None,
    from_dir: Annotated[
        Path | None,
        typer.Option(
            "--from-dir",
            file_okay=False,
            show_default=False,
            help="A directory another tool wrote: fullchain.pem + privkey.pem, or lego's certificates/.",
        ),
    ] = None,
    from_target: Annotated[
        str | None,
        typer.Option("--from-target", show_default=False, help="A declared target: take the chain it serves."),
    ] = None,
    output_format: FormatOption = OutputFormat.TEXT,
) -> None:
    """Adopt a certificate that exists already (issued by another tool), without reissuing it.

    The certificate must match the declared NAME: same domains, a key of the declared key type
    that matches it, not expired, and no live certificate for NAME in the state yet. The key is
    sealed by the KMS, the certificate recorded with its real dates (origin imported), the audit
    says imported. The next plan renews it on schedule; it deploys it to the declared targets not
    known to serve it (all of them, unless it was read from a target with --from-target).

    Examples: certreconcile import shop --cert shop.crt --key shop.key;
    certreconcile import shop --from-dir ~/.lego;
    certreconcile import shop --from-target web --key /etc/nginx/certs/shop/privkey.pem
    """
    from certreconcile.adopt import adopt, declared
    from certreconcile.plugins.registry import create_kms
    from certreconcile.wiring import Settings, actor_for, open_store

    try:
        desired = load_directory(directory)
        settings = Settings.from_env(directory)
        spec = declared(desired, name)
        adopted = _source(spec, desired, settings, (cert, key, chain), from_dir, from_target)
        now = cli_clock().now()
        kms = create_kms(desired.kms, settings.plugin_context)
        result = adopt(adopted, desired, name, open_store(settings), kms, now, actor_for(desired, settings.env))
    except CertReconcileError as exc:
        fail(exc)
    _print(result, output_format)
