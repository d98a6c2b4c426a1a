"""``certreconcile check``: a preflight that exercises the real challenges and plug-ins and changes nothing lasting.

Per certificate, the challenge its issuer will use: a DNS-01 TXT record published through the real
provider, seen at every authoritative name server, removed again; or an HTTP-01 token served through
the configured solver, fetched as the CA would, removed again. Per plug-in, a no-op call: the KMS
wraps and unwraps a test data key, each DNS provider and target runs its ``check()`` (the target's
configuration test, e.g. ``nginx -t``, without deploying). ``--order-staging`` orders once from each
ACME issuer's staging directory with a throwaway account and key, and discards the certificate.

Nothing is written to the state database (it is not even opened) or to a target.
"""

from __future__ import annotations

from certreconcile.preflight.report import CheckOutcome, CheckReport, CheckResult
from certreconcile.preflight.run import CheckOptions, run_checks

__all__ = ["CheckOptions", "CheckOutcome", "CheckReport", "CheckResult", "run_checks"]
