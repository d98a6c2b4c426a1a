"""``certreconcile check``: the preflight (:mod:`certreconcile.preflight`)."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from certreconcile.cli.common import DEFAULT_DIR, DirOption, cli_clock, fail, load_directory
from certreconcile.cli.exit_codes import ExitCode
from certreconcile.cli.formats import FormatOption, OutputFormat
from certreconcile.errors import CertReconcileError

__all__ = ["check"]


def check(
    names: Annotated[
        list[str] | None,
        typer.Argument(help="Certificates to check (default: every declared one).", show_default=False),
    ] = None,
    directory: DirOption = DEFAULT_DIR,
    order_staging: Annotated[
        bool,
        typer.Option(
            "--order-staging",
            help="Also order each certificate once from its ACME issuer's staging directory (letsencrypt → "
            "letsencrypt-staging; any other directory: itself) with a throwaway account and key; discarded.",
        ),
    ] = False,
    http01_base_url: Annotated[
        str | None,
        typer.Option(
            "--http01-base-url",
            help="Fetch HTTP-01 tokens from this URL instead of http://<domain> (the Host header stays the domain).",
        ),
    ] = None,
    output_format: FormatOption = OutputFormat.TEXT,
) -> None:
    """Preflight: prove each certificate's challenge and each plug-in's credentials work, changing nothing.

    Per certificate: DNS-01 publishes a TXT record through the real provider, waits until every
    authoritative name server answers it and removes it; HTTP-01 serves a token through the issuer's
    solver, fetches it as the CA would, removes it. Per plug-in: the KMS wraps and unwraps a test
    key, DNS providers and targets run their own check (nginx -t, haproxy -c... without deploying).
    The state database is not opened. Exits 1 when any check fails.

    Examples: certreconcile check; certreconcile check shop api --format json;
    certreconcile check --order-staging
    """
    from certreconcile.preflight import CheckOptions, run_checks
    from certreconcile.wiring import Settings

    try:
        desired = load_directory(directory)
        settings = Settings.from_env(directory)
        options = CheckOptions(names=tuple(names or ()), http01_base_url=http01_base_url, order_staging=order_staging)
        report = run_checks(desired, settings.plugin_context, options, cli_clock().now())
    except CertReconcileError as exc:
        fail(exc)
    sys.stdout.write(report.as_json() + "\n" if output_format == "json" else report.as_text())
    if not report.ok:
        raise typer.Exit(ExitCode.ERROR)
