"""The registry of error codes: every stable code certreconcile gives, with its category, hint and exit code.

An error shows ``error[code]: message (hint)``. The code is stable (scripts and searches rely on it); the
hint here is the default advice for the README's table, an error's own hint may say more (names, paths).
Every error exits 1: 2 is reserved for ``plan --detailed-exitcode`` "changes" (see ``cli/exit_codes.py``).
Plan diagnostics (category ``plan``) are warnings first; as errors they make ``apply`` refuse (exit 1).

A code raised anywhere in ``src/`` must be listed here, and a code listed here must be raised somewhere:
``tests/unit/test_error_codes.py`` reads the sources and fails otherwise. With
``CERTRECONCILE_CHECK_ERROR_CODES=1`` (the tests set it) constructing an error with an unregistered code
fails at once. The README's "Error codes" table is generated from this module::

    PYTHONPATH=src python -m certreconcile.error_codes --write README.md
"""

from __future__ import annotations

import enum
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

__all__ = [
    "ERROR_EXIT_CODE",
    "README_END",
    "README_START",
    "REGISTRY",
    "Category",
    "ErrorCode",
    "is_registered",
    "markdown_table",
    "replace_readme_section",
]

#: Every error exits 1 (design §6).
ERROR_EXIT_CODE = 1


class Category(enum.StrEnum):
    """Where an error comes from; the README's table is grouped by it."""

    COMMAND = "command"  # the command line or the Python API was used wrongly
    CONFIG = "config"  # settings, the environment, the desired-state directory
    DESIRED_STATE = "desired-state"  # the declarations (YAML and validation), shown as file:line:col
    STATE = "state"  # the database: connection, schema, roles, integrity
    KMS = "kms"  # sealing or opening a private key
    ISSUER = "issuer"  # the CA (ACME, Vault PKI, the local CA)
    DNS = "dns"  # DNS-01 records
    TARGET = "target"  # deploying to or verifying a target
    PLAN = "plan"  # plan diagnostics: rate-limit budgets, backoffs
    APPLY = "apply"  # apply as a whole: refusals and failed changes
    FLEET = "fleet"  # the agent on a server host: its configuration and the requests it refuses
    NOTIFY = "notify"  # sending a notification (retried with backoff; never fails a cycle)


@dataclass(frozen=True, slots=True)
class ErrorCode:
    code: str  # stable kebab-case
    category: Category
    hint: str  # the default hint: what to do
    exit_code: int = ERROR_EXIT_CODE


def _code(code: str, category: Category, hint: str) -> ErrorCode:
    return ErrorCode(code, category, hint)


_CODES: tuple[ErrorCode, ...] = (
    # --- command
    _code(
        "agent-already-enrolled",
        Category.COMMAND,
        "pass --replace to enrol the name again with a new key (the old certificate stops being recorded)",
    ),
    _code("agent-csr-unreadable", Category.COMMAND, "pass the CSR file made on the agent's host with --csr"),
    _code("agent-not-enrolled", Category.COMMAND, "enrol it: certreconcile agent enroll NAME --csr FILE --out CERT"),
    _code("agent-write-failed", Category.COMMAND, "choose a writable path for --out / --ca-out"),
    _code(
        "desired-missing",
        Category.COMMAND,
        "pass the desired-state directory, or build the manager with from_directory()",
    ),
    _code("already-issued", Category.COMMAND, "use rotate_certificate(cert_id) to replace it"),
    _code("approval-required", Category.COMMAND, "pass --auto-approve, or apply a saved plan file"),
    _code(
        "audit-head-invalid",
        Category.COMMAND,
        "pass the file written by `certreconcile audit verify --export-head`",
    ),
    _code("audit-head-unwritable", Category.COMMAND, "choose a writable path for --export-head"),
    _code("check-crashed", Category.COMMAND, "a plug-in failed its check with an unexpected error: report it"),
    _code("cert-unknown", Category.COMMAND, "see `certreconcile status --format json` for ids"),
    _code("certreconcile-error", Category.COMMAND, "see the message"),
    _code(
        "challenge-solver-missing",
        Category.COMMAND,
        "declare an ACME issuer with http01 (standalone or webroot), or pass acme_provider=",
    ),
    _code("challenge-token-invalid", Category.COMMAND, "pass the token the CA gave (base64url characters only)"),
    _code("challenge-url-invalid", Category.COMMAND, "pass an http:// or https:// URL"),
    _code("comment-write-failed", Category.COMMAND, "pass a writable directory to --comment-dir"),
    _code("dir-missing", Category.COMMAND, "pass the desired-state directory with --dir"),
    _code("domains-empty", Category.COMMAND, "pass at least one domain"),
    _code(
        "git-command-failed",
        Category.COMMAND,
        "check the clone of run --git (--git-dir); remove it to clone again",
    ),
    _code(
        "git-commit-signature-refused",
        Category.COMMAND,
        "sign with an SSH key listed in the allowed signers file; the next signed commit on top applies",
    ),
    _code(
        "git-commit-unsigned",
        Category.COMMAND,
        "sign with an SSH key listed in the allowed signers file; the next signed commit on top applies",
    ),
    _code("git-dir-not-a-clone", Category.COMMAND, "pass an empty or new directory with --git-dir"),
    _code("git-fetch-failed", Category.COMMAND, "check the remote and its credentials; the next cycle tries again"),
    _code(
        "git-followed-commit-missing",
        Category.COMMAND,
        "make the branch descend from the followed commit again (`git merge -s ours <sha>`), or check --git",
    ),
    _code(
        "git-not-fast-forward",
        Category.COMMAND,
        "make the branch descend from the followed commit again (`git merge -s ours <sha>`) and push",
    ),
    _code("import-chain-mismatch", Category.COMMAND, "pass the intermediates of this certificate, or omit --chain"),
    _code("import-domains-mismatch", Category.COMMAND,
          "import the certificate issued for exactly the declared domains, or change the declaration"),
    _code("import-expired", Category.COMMAND, "nothing to adopt: `certreconcile apply` issues a new certificate"),
    _code("import-file-invalid", Category.COMMAND, "pass the PEM files the other tool wrote (an unencrypted key)"),
    _code("import-file-unreadable", Category.COMMAND, "check the path and that this user may read it"),
    _code("import-key-mismatch", Category.COMMAND, "pass the private key the certificate was issued for"),
    _code("import-key-type-mismatch", Category.COMMAND,
          "declare the key type of the key (key: ...) to adopt it, or let apply issue a new certificate"),
    _code("import-layout-unknown", Category.COMMAND,
          "give a directory with fullchain.pem and privkey.pem, or lego's certificates/; else --cert and --key"),
    _code("import-name-managed", Category.COMMAND,
          "import adopts names with no live certificate; `certreconcile rotate NAME` replaces one"),
    _code("import-target-unobservable", Category.COMMAND,
          "declare verify: HOST:PORT on the target, or import with --cert and --key"),
    _code("import-target-unreachable", Category.COMMAND,
          "check the target's verify address and that it serves this certificate"),
    _code("init-not-empty", Category.COMMAND, "run init in a new or empty directory"),
    _code("issuer-unknown", Category.COMMAND, "use an issuer declared in the desired state"),
    _code("metrics-port-unavailable", Category.COMMAND, "choose another --metrics-port or --metrics-address"),
    _code("name-unknown", Category.COMMAND, "see `certreconcile status` for the names"),
    _code("not-a-git-repository", Category.COMMAND, "run without --git-pull"),
    _code(
        "plan-differs-from-review",
        Category.COMMAND,
        "open a pull request for the current state and review its plan",
    ),
    _code("plan-file-invalid", Category.COMMAND, "save one with `plan --out FILE`"),
    _code("plan-write-failed", Category.COMMAND, "choose a writable path for --out"),
    _code("reviewed-plan-invalid", Category.COMMAND, "re-run the plan job on the pull request"),
    _code("reviewed-plan-mismatch", Category.COMMAND, "pass the plan comments of the reviewed pull request"),
    _code("target-unknown", Category.COMMAND, "use a target declared in the desired state"),
    _code("usage", Category.COMMAND, "use text or json"),
    # --- config
    _code(
        "plugin-broken",
        Category.CONFIG,
        "reinstall the package that provides the plug-in kind; its module must export Config and create",
    ),
    _code(
        "allowed-signers-unreadable",
        Category.CONFIG,
        "pass a readable file: one `<principal> <ssh public key>` line per allowed signer",
    ),
    _code("acme-eab-missing", Category.CONFIG, "export both variables (the CA gives you the key id and the HMAC key)"),
    _code(
        "config-invalid",
        Category.CONFIG,
        "fix the setting named in the message (see Configuration), or unset it for the default",
    ),
    _code("desired-dir-not-found", Category.CONFIG, "pass --dir with a directory of *.yaml files"),
    _code("desired-dir-outside-repository", Category.CONFIG, "pass a --dir inside the Git repository"),
    _code("git-ref-not-found", Category.CONFIG, "use a branch, tag or commit of this repository"),
    _code("kms-file-invalid", Category.CONFIG, "write e.g. `kms: {aws: {key_id: alias/certs}}`"),
    _code(
        "plugin-unknown",
        Category.CONFIG,
        "use a kind listed by `certreconcile schema`, or install the package that provides it",
    ),
    # --- desired-state
    _code("target-dir-root", Category.DESIRED_STATE, "name a directory of its own for the target, never /"),
    _code(
        "invalid-command",
        Category.DESIRED_STATE,
        "write the command and its arguments with balanced quotes, or null for none",
    ),
    _code("lifetime-too-short", Category.DESIRED_STATE, "declare a lifetime of at least 1h"),
    _code("path-has-nul", Category.DESIRED_STATE, "remove the NUL character from the path"),
    _code(
        "path-has-control-character",
        Category.DESIRED_STATE,
        "remove the control character (a line break, tab or escape) from the path",
    ),
    _code(
        "target-dir-escapes", Category.DESIRED_STATE, "write an absolute path for a directory outside the desired state"
    ),
    _code("duplicate-target", Category.DESIRED_STATE, "list each target once per certificate"),
    _code("duration-too-long", Category.DESIRED_STATE, "write a duration of at most 36500d"),
    _code("duplicate-target-dir", Category.DESIRED_STATE, "give each target a directory of its own"),
    _code(
        "target-dir-in-repository",
        Category.DESIRED_STATE,
        "write the keys outside the Git work tree, or git-ignore the directory (.certreconcile/ is)",
    ),
    _code(
        "env-unset",
        Category.DESIRED_STATE,
        "set the variable where plan and apply run (plan --allow-unset-secrets in pull-request jobs)",
    ),
    _code("desired-file-name", Category.DESIRED_STATE, "rename the file without control characters"),
    _code("yaml-too-deep", Category.DESIRED_STATE, "flatten the nesting: declarations need a few levels only"),
    _code(
        "yaml-tag",
        Category.DESIRED_STATE,
        "remove the tag: values are plain YAML (strings, numbers, booleans, lists, mappings)",
    ),
    _code("yaml-alias-limit", Category.DESIRED_STATE, "anchors and aliases expand too much; write the values out"),
    _code(
        "domain-mixed-scripts",
        Category.DESIRED_STATE,
        "write each label in one script (a look-alike letter from another script is a homograph)",
    ),
    _code(
        "domain-invisible-character",
        Category.DESIRED_STATE,
        "remove the invisible character (zero-width space, soft hyphen)",
    ),
    _code(
        "domain-reserved-label",
        Category.DESIRED_STATE,
        "labels with '--' in positions 3-4 are reserved unless they are valid xn-- labels",
    ),
    _code(
        "haproxy-cert-dir-unsafe",
        Category.DESIRED_STATE,
        "use a cert_dir path without spaces, quotes, ';', '#' or '\\'",
    ),
    _code(
        "webhook-numeric-host",
        Category.DESIRED_STATE,
        "write the address as four decimal numbers (a.b.c.d), or use the receiver's DNS name",
    ),
    _code("webhook-address-refused", Category.DESIRED_STATE, "point the webhook at the receiver's own address"),
    _code("desired-file-not-regular", Category.DESIRED_STATE, "remove it"),
    _code(
        "desired-file-outside",
        Category.DESIRED_STATE,
        "declarations live inside the directory: copy the file in instead of linking to it",
    ),
    _code("desired-file-too-large", Category.DESIRED_STATE, "split the declarations over several files"),
    _code(
        "desired-state-invalid",
        Category.DESIRED_STATE,
        "fix the errors listed above, then run `certreconcile validate`",
    ),
    _code("dns01-needs-provider", Category.DESIRED_STATE, "add dns_provider: <a name declared under dns_providers>"),
    _code(
        "domain-bad-characters",
        Category.DESIRED_STATE,
        "use letters, digits and hyphens (or a Unicode name, converted to IDNA)",
    ),
    _code("domain-bad-idna", Category.DESIRED_STATE, "write a valid internationalized name, or its xn-- form"),
    _code("domain-empty", Category.DESIRED_STATE, "remove the empty entry"),
    _code("domain-empty-label", Category.DESIRED_STATE, "remove the empty label (two dots in a row)"),
    _code("domain-ip-address", Category.DESIRED_STATE, "certificates here are for DNS names; use a name"),
    _code("domain-label-too-long", Category.DESIRED_STATE, "keep each label at most 63 characters"),
    _code(
        "domain-not-allowed",
        Category.DESIRED_STATE,
        "use a name the policy allows, or extend policy.allowed_domains",
    ),
    _code("domain-not-qualified", Category.DESIRED_STATE, "write a fully qualified name such as shop.example.com"),
    _code("domain-too-long", Category.DESIRED_STATE, "keep the name at most 253 characters"),
    _code("domain-whitespace", Category.DESIRED_STATE, "remove the spaces around the name"),
    _code(
        "domain-wildcard-position",
        Category.DESIRED_STATE,
        "a wildcard is only allowed as the whole leftmost label: *.example.com",
    ),
    _code(
        "domain-wildcard-too-broad",
        Category.DESIRED_STATE,
        "a wildcard needs at least two labels below it: *.example.com",
    ),
    _code("duplicate-domain", Category.DESIRED_STATE, "list each name once"),
    _code("duplicate-kms", Category.DESIRED_STATE, "declare kms in one file only"),
    _code("duplicate-name", Category.DESIRED_STATE, "certificate names are unique across all files; rename one"),
    _code(
        "duplicate-plugin-name",
        Category.DESIRED_STATE,
        "names in a section are unique across all files; rename one",
    ),
    _code("duplicate-policy", Category.DESIRED_STATE, "declare policy in one file only"),
    _code("duplicate-notify", Category.DESIRED_STATE, "declare notify in one file only"),
    _code("invalid-duration", Category.DESIRED_STATE, "write a whole number above zero and a unit, e.g. 120s"),
    _code("invalid-port", Category.DESIRED_STATE, "use a port from 1 to 65535"),
    _code(
        "invalid-renew-before",
        Category.DESIRED_STATE,
        "write a duration such as 30d or a percentage of the lifetime such as 33%",
    ),
    _code("key-type-unsupported", Category.DESIRED_STATE, "use a key type the issuer supports (listed in the message)"),
    _code("lifetime-exceeds-ca-lifetime", Category.DESIRED_STATE, "shorten lifetime or lengthen ca_lifetime"),
    _code("renew-before-too-long", Category.DESIRED_STATE, "use a shorter duration or a percentage such as 33%"),
    _code("schema-invalid-type", Category.DESIRED_STATE, "write a value of the type named in the message"),
    _code("schema-invalid-value", Category.DESIRED_STATE, "use one of the values named in the message"),
    _code("schema-missing-field", Category.DESIRED_STATE, "add the field named in the message"),
    _code("schema-missing-kind", Category.DESIRED_STATE, "declare exactly one kind, e.g. `files: {dir: out}`"),
    _code("schema-multiple-kinds", Category.DESIRED_STATE, "declare exactly one kind per entry"),
    _code(
        "schema-unknown-field",
        Category.DESIRED_STATE,
        "remove the field, or check its spelling against `certreconcile schema`",
    ),
    _code(
        "invalid-target-reference",
        Category.DESIRED_STATE,
        "name a declared target, or an agent's local target as AGENT/TARGET (e.g. web-1/edge-nginx)",
    ),
    _code(
        "agent-target-declared",
        Category.DESIRED_STATE,
        "declare the agent under agents and name its local targets as AGENT/TARGET in a certificate's targets",
    ),
    _code("too-many-names", Category.DESIRED_STATE, "split the names over several certificates"),
    _code(
        "unknown-dns-provider",
        Category.DESIRED_STATE,
        "declare the DNS provider under dns_providers, or fix the name",
    ),
    _code("unknown-agent", Category.DESIRED_STATE, "declare the agent under agents, or fix the name"),
    _code("unknown-issuer", Category.DESIRED_STATE, "declare the issuer under issuers, or fix the name"),
    _code("unknown-target", Category.DESIRED_STATE, "declare the target under targets, or fix the name"),
    _code("wildcard-needs-dns01", Category.DESIRED_STATE, "set challenge: dns-01 and a dns_provider"),
    _code(
        "yaml-duplicate-key",
        Category.DESIRED_STATE,
        "each key may appear once in a mapping; merge or rename the entries",
    ),
    _code("yaml-encoding", Category.DESIRED_STATE, "save the file as UTF-8 (without a byte-order mark in the middle)"),
    _code(
        "yaml-forbidden-character",
        Category.DESIRED_STATE,
        "remove the character, or write it as an escape in a double-quoted string",
    ),
    _code(
        "yaml-multiple-documents",
        Category.DESIRED_STATE,
        "put one YAML document in each file (no `---` separators)",
    ),
    _code(
        "yaml-parser-mismatch",
        Category.DESIRED_STATE,
        "write this part in plain block style; certreconcile does not guess which reading is right",
    ),
    _code("yaml-syntax", Category.DESIRED_STATE, "fix the YAML at the position shown"),
    # --- state
    _code(
        "fleet-ca-missing",
        Category.STATE,
        "enrol a first agent with `certreconcile agent enroll NAME --csr FILE --out CERT` (it makes the fleet CA)",
    ),
    _code("fleet-ca-invalid", Category.STATE, "the stored fleet CA is damaged: restore the database from a backup"),
    _code(
        "database-timeout",
        Category.STATE,
        "a statement ran past statement_timeout: check the database's load and locks; the next apply finishes the rest",
    ),
    _code("audit-append-only", Category.STATE, "the audit log is append-only: nothing may change or delete its rows"),
    _code(
        "audit-tampered",
        Category.STATE,
        "the audit trail was tampered with; `certreconcile audit verify` shows where",
    ),
    _code("database-unavailable", Category.STATE, "check CERTRECONCILE_DATABASE_URL and that the server is up; retry"),
    _code(
        "db-roles-failed",
        Category.STATE,
        "run `certreconcile db roles` as a role allowed to create roles and change owners (a superuser, or the"
        " database owner with CREATEROLE); nothing was changed",
    ),
    _code("db-roles-refused", Category.STATE, "choose three different roles, none a superuser or member of the owner"),
    _code(
        "embedded-database-failed",
        Category.STATE,
        "see the embedded server's log in the message, or set CERTRECONCILE_DATABASE_URL",
    ),
    _code(
        "embedded-database-unsafe",
        Category.STATE,
        "fix the ownership or permissions named in the message, or set CERTRECONCILE_DATABASE_URL",
    ),
    _code("migration-failed", Category.STATE, "commit or roll back before calling upgrade()"),
    _code(
        "migration-invalid",
        Category.STATE,
        "give every file in certreconcile/actual/migrations a unique NNNN prefix",
    ),
    _code(
        "schema-behind",
        Category.STATE,
        "run `certreconcile db upgrade` then `certreconcile db roles` as the database administrator"
        " (see README, Production setup)",
    ),
    _code(
        "schema-missing",
        Category.STATE,
        "run `certreconcile db upgrade` first, as the administrator, then `certreconcile db roles`",
    ),
    _code("stale-plan", Category.STATE, "run `certreconcile plan` again and apply the new plan"),
    _code("state-conflict", Category.STATE, "another apply changed it at the same time: plan again"),
    _code("state-error", Category.STATE, "see the message; nothing was changed"),
    _code("state-invalid", Category.STATE, "a bug or a damaged row: report it with the message"),
    _code("state-not-found", Category.STATE, "plan again"),
    _code(
        "state-permission-denied",
        Category.STATE,
        "run as the role for this command (see Production setup), or run `certreconcile db roles`",
    ),
    # --- kms
    _code("kms-access-denied", Category.KMS, "grant the KMS permissions to encrypt and decrypt with the key"),
    _code("kms-check-failed", Category.KMS, "check the KMS configuration: its key does not give back what it wrapped"),
    _code("kms-config-invalid", Category.KMS, "fix the kms declaration named in the message"),
    _code("kms-credentials-missing", Category.KMS, "set the KMS credentials (see the message for which)"),
    _code(
        "kms-decrypt-failed",
        Category.KMS,
        "the stored key_ref belongs to another row, was altered, or was wrapped by another key",
    ),
    _code(
        "kms-envelope-invalid",
        Category.KMS,
        "the stored key_ref is damaged; rotate the certificate to replace its key",
    ),
    _code("kms-error", Category.KMS, "see the KMS error in the message"),
    _code("kms-integrity-failed", Category.KMS, "the response was damaged in transit; retry"),
    _code("kms-key-disabled", Category.KMS, "enable the KMS key (or its version)"),
    _code("kms-key-invalid", Category.KMS, "restore the key file from your backup"),
    _code("kms-key-missing", Category.KMS, "restore it from your backup, or set CERTRECONCILE_LOCAL_KMS_KEY_FILE"),
    _code("kms-key-not-found", Category.KMS, "check the key's name or id and its region"),
    _code(
        "kms-mismatch",
        Category.KMS,
        "configure the KMS the keys were sealed with, or run `certreconcile kms rewrap`",
    ),
    _code("kms-sdk-missing", Category.KMS, "install the extra for this KMS, e.g. pip install 'certreconcile[aws]'"),
    _code("kms-throttled", Category.KMS, "retry later, or raise the KMS request quota"),
    _code("kms-unavailable", Category.KMS, "retry later"),
    _code(
        "kms-unsupported",
        Category.KMS,
        "upgrade to Vault >= 1.15 or OpenBao >= 2: an unbound data key is never stored",
    ),
    _code(
        "kms-wrong-master-key",
        Category.KMS,
        "configure the KMS key the state was created with, or run `certreconcile kms rewrap`",
    ),
    # --- issuer
    _code(
        "agent-csr-invalid",
        Category.ISSUER,
        "make the CSR on the agent's host from its own key (EC P-256/P-384, Ed25519 or RSA >= 2048)",
    ),
    _code(
        "acme-server-error",
        Category.ISSUER,
        "the CA failed (5xx or serverInternal) after bounded retries; the next apply tries again",
    ),
    _code("acme-account", Category.ISSUER, "check the directory URL, the account key and EAB; retry later"),
    _code("acme-ari", Category.ISSUER, "the CA's renewal info is optional; the renewal window is used instead"),
    _code("acme-ari-id", Category.ISSUER, "the certificate has no ARI identifier; it is renewed by its renewal window"),
    _code(
        "acme-authorization-invalid",
        Category.ISSUER,
        "check that the names point at this solver (or the DNS provider is right), then apply again",
    ),
    _code("acme-bad-token", Category.ISSUER, "a bug or a hostile CA: the token has characters outside base64url"),
    _code(
        "acme-challenge",
        Category.ISSUER,
        "check that the challenge is reachable by the CA; the order is retried on the next apply",
    ),
    _code(
        "acme-challenge-unavailable",
        Category.ISSUER,
        "use a challenge the CA offers for these names (wildcards need dns-01)",
    ),
    _code("acme-cleanup", Category.ISSUER, "remove the challenge file or record by hand if it stayed"),
    _code("acme-directory", Category.ISSUER, "check the directory URL and the network"),
    _code(
        "acme-dns-provider-missing",
        Category.ISSUER,
        "set challenge: dns-01 and dns_provider on the certificate (wildcards need dns-01)",
    ),
    _code("acme-download", Category.ISSUER, "retry: the order is resumed on the next apply"),
    _code("acme-empty-chain", Category.ISSUER, "the CA returned no certificate; retry, or report it to the CA"),
    _code("acme-error", Category.ISSUER, "see the CA's problem in the message"),
    _code("acme-finalize", Category.ISSUER, "retry: the order is resumed on the next apply"),
    _code("acme-http01-listen", Category.ISSUER, "free the port, or set http01.standalone.listen (or use webroot)"),
    _code("acme-order", Category.ISSUER, "see the CA's problem in the message; retry later"),
    _code("acme-order-invalid", Category.ISSUER, "the CA refused the order; the next apply places a new one"),
    _code("acme-protocol", Category.ISSUER, "the CA answered something unexpected; check the directory URL"),
    _code("acme-revoke", Category.ISSUER, "see the CA's problem in the message"),
    _code("check-http01-unreachable", Category.ISSUER,
          "the CA connects to port 80 of the name: check its DNS, the firewall and the port forwarding to the solver"),
    _code("check-http01-wrong-answer", Category.ISSUER,
          "another server answers on that address: point the name (or the port forwarding) at the solver"),
    _code("check-not-acme", Category.ISSUER, "--order-staging orders from ACME issuers only"),
    _code(
        "acme-timeout",
        Category.ISSUER,
        "the order is resumed on the next apply; raise order_timeout if the CA is slow",
    ),
    _code("acme-tls", Category.ISSUER, "set ca_bundle to the PEM file of the CA's TLS root (internal CAs, Pebble)"),
    _code(
        "acme-unreachable",
        Category.ISSUER,
        "check the directory URL and the network; the order resumes on the next apply",
    ),
    _code(
        "acme-validation-failed",
        Category.ISSUER,
        "check that the challenge is reachable by the CA; the order is retried on the next apply",
    ),
    _code("acme-webroot-write", Category.ISSUER, "check that http01.webroot.path exists and is writable"),
    _code("csr-invalid", Category.ISSUER, "a bug: report it with the message"),
    _code("issuer-error", Category.ISSUER, "see the message; the order is retried on the next apply"),
    _code("issuer-undeclared", Category.ISSUER, "keep the issuer declared until its certificates are revoked"),
    _code("issuer-wrong-key", Category.ISSUER, "the CA issued for another key: report it; the change is retried"),
    _code(
        "issuer-wrong-names",
        Category.ISSUER,
        "the CA issued other names: check the issuer's policy; the change is retried",
    ),
    _code("revocation-reason-unknown", Category.ISSUER, "use an RFC 5280 reason such as keyCompromise or superseded"),
    _code(
        "vault-pki-access-denied",
        Category.ISSUER,
        "check the AppRole ids, or the Kubernetes role and its bound service account",
    ),
    _code(
        "vault-pki-bad-certificate",
        Category.ISSUER,
        "the PKI answered something that is not a certificate; check the mount and role",
    ),
    _code("vault-pki-bad-response", Category.ISSUER, "check that url and mount point at a Vault/OpenBao PKI"),
    _code("vault-pki-certificate-unknown", Category.ISSUER, "the certificate was not issued by this PKI mount"),
    _code(
        "vault-pki-credentials-missing",
        Category.ISSUER,
        "set VAULT_TOKEN, or the AppRole or Kubernetes login settings",
    ),
    _code("vault-pki-error", Category.ISSUER, "see the Vault server log"),
    _code("vault-pki-mount-not-found", Category.ISSUER, "enable the pki secrets engine at the mount, or fix mount"),
    _code(
        "vault-pki-name-not-allowed",
        Category.ISSUER,
        "allow these names in the PKI role (allowed_domains, allow_subdomains...)",
    ),
    _code("vault-pki-refused", Category.ISSUER, "see the Vault server log"),
    _code("vault-pki-role-not-found", Category.ISSUER, "create the role, or fix role"),
    _code("vault-pki-sdk-missing", Category.ISSUER, "pip install 'certreconcile[vault]'"),
    _code("vault-pki-throttled", Category.ISSUER, "retry later"),
    _code("vault-pki-tls", Category.ISSUER, "set ca_bundle to the PEM of the CA that signed the server's certificate"),
    _code("vault-pki-unavailable", Category.ISSUER, "check the url and the network"),
    # --- dns
    _code(
        "dns-auth-failed",
        Category.DNS,
        "give the DNS provider's credentials the right to edit records in this zone",
    ),
    _code("check-cleanup-failed", Category.DNS, "remove the test TXT records named in the message by hand"),
    _code(
        "dns-cname-lookup-failed",
        Category.DNS,
        "declare resolvers: [HOST:PORT] that answer for every zone of the chain, or set follow_cname: false",
    ),
    _code("dns-cname-loop", Category.DNS, "fix the CNAMEs of the _acme-challenge chain, or set follow_cname: false"),
    _code("dns-config-invalid", Category.DNS, "fix the DNS provider's declaration named in the message"),
    _code(
        "dns-exec-failed",
        Category.DNS,
        "run the program by hand with the same arguments (present FQDN VALUE) and fix what it prints",
    ),
    _code("dns-exec-not-found", Category.DNS, "fix program: an absolute path to an executable file"),
    _code("dns-exec-timeout", Category.DNS, "make the program faster, or raise timeout on the exec provider"),
    _code("dns-credentials-invalid", Category.DNS, "copy the key's secret from the server's configuration"),
    _code("dns-credentials-missing", Category.DNS, "set the DNS provider's credentials (see the message for which)"),
    _code("dns-error", Category.DNS, "see the message; the order is retried on the next apply"),
    _code(
        "dns-propagation-timeout",
        Category.DNS,
        "check that the provider publishes to that server; raise propagation_timeout if it is slow",
    ),
    _code("dns-lexicon-missing", Category.DNS, "pip install 'certreconcile[lexicon]'"),
    _code(
        "dns-lexicon-provider-unknown",
        Category.DNS,
        "name one of lexicon's providers (lexicon --help lists them), or pip install 'dns-lexicon[NAME]'",
    ),
    _code("dns-provider-error", Category.DNS, "see the provider's error code in the message; retry later"),
    _code("dns-sdk-missing", Category.DNS, "pip install 'certreconcile[aws]'"),
    _code("dns-server-refused", Category.DNS, "check that the server serves the zone and allows the query"),
    _code("dns-server-unknown", Category.DNS, "declare the nameservers to ask, or fix their names"),
    _code("dns-server-unreachable", Category.DNS, "check the network, api_base and ca_bundle; retry later"),
    _code("dns-throttled", Category.DNS, "retry later"),
    _code("dns-update-failed", Category.DNS, "check the server's log; the order is retried on the next apply"),
    _code("dns-update-refused", Category.DNS, "check that the TSIG key may update the zone (update-policy)"),
    _code("dns-zone-not-found", Category.DNS, "check the zone's name (or id) and that the credentials may read it"),
    # --- target
    _code(
        "agent-unreachable",
        Category.TARGET,
        "check that the agent runs and the applier reaches its url; the change stays open until it answers",
    ),
    _code(
        "agent-identity-mismatch",
        Category.TARGET,
        "check the agent's url in `agents:`: the server there holds another agent's certificate (or none)",
    ),
    _code("agent-error", Category.TARGET, "see the agent's message and its log on its host"),
    _code("agent-response-invalid", Category.TARGET, "run the same certreconcile version on the agent and the applier"),
    _code(
        "agent-not-verified",
        Category.TARGET,
        "check the target on the agent's host (its log says why); the next apply tries again",
    ),
    _code(
        "agent-csr-key-changed",
        Category.TARGET,
        "a new agent key means a new enrolment: certreconcile agent enroll NAME --csr FILE --out CERT --replace",
    ),
    _code("agent-renewal-conflict", Category.TARGET, "another process renewed or enrolled the agent: apply again"),
    _code(
        "fleet-identity-failed",
        Category.TARGET,
        "the applier's TLS identity could not be loaded: check the fleet CA with `certreconcile agent ca`",
    ),
    _code(
        "target-runtime-api-unsafe",
        Category.TARGET,
        "use a certificate path without spaces, quotes, ';', '#' or line breaks",
    ),
    _code(
        "target-access-denied",
        Category.TARGET,
        "allow the target's API calls to this role (see the message for which)",
    ),
    _code(
        "target-acm-arn-taken",
        Category.TARGET,
        "a target with certificate_arn serves one certificate name; give each name its own target",
    ),
    _code("target-acm-limit", Category.TARGET, "the ACM certificate quota of the account is reached"),
    _code("target-acm-not-found", Category.TARGET, "check certificate_arn and the region"),
    _code("target-acm-rejected", Category.TARGET, "ACM refused the certificate, its chain or its key"),
    _code(
        "target-address-refused",
        Category.TARGET,
        "use a routable address; link-local and metadata addresses need allow_link_local: true",
    ),
    _code(
        "target-cert-not-loaded",
        Category.TARGET,
        "load the certificate in a bind line and reload HAProxy, or set reload_command",
    ),
    _code("target-config-invalid", Category.TARGET, "fix the target's declaration named in the message"),
    _code(
        "target-config-test-failed",
        Category.TARGET,
        "the server's configuration test failed: see its output in the message",
    ),
    _code("target-credentials-missing", Category.TARGET, "set the target's credentials (see the message for which)"),
    _code("target-error", Category.TARGET, "see the message; the target is retried on the next apply"),
    _code("target-not-serving", Category.TARGET, "the reload did not take effect; check the target, then apply again"),
    _code("target-path-unsafe", Category.TARGET, "use a path inside the target's directory, without links"),
    _code("target-redirect-refused", Category.TARGET, "point url at the final receiver address"),
    _code(
        "target-rejected",
        Category.TARGET,
        "the target refused the certificate: see its log; it must suit the server's TLS config",
    ),
    _code(
        "verification-failed",
        Category.TARGET,
        "the new certificate is stored but not served everywhere: fix the targets named, then rotate or apply again",
    ),
    _code("target-reload-failed", Category.TARGET, "run the reload command by hand to see its full output"),
    _code(
        "target-runtime-api-failed",
        Category.TARGET,
        "is HAProxy running with `stats socket ... level admin` at runtime_api?",
    ),
    _code(
        "target-runtime-api-refused",
        Category.TARGET,
        "check that the certificate, its chain and its key belong together",
    ),
    _code(
        "target-sdk-missing",
        Category.TARGET,
        "install the extra the message names: pip install 'certreconcile[aws]' or 'certreconcile[ssh]'",
    ),
    _code(
        "target-secret-missing",
        Category.TARGET,
        "export the variable named in the message with the secret shared with the receiver",
    ),
    _code(
        "target-ssh-auth-failed",
        Category.TARGET,
        "add the public key to the remote user's authorized_keys, or check user and key_file",
    ),
    _code("target-ssh-failed", Category.TARGET, "the SSH session failed after login: see the host's sshd log"),
    _code(
        "target-ssh-host-key-changed",
        Category.TARGET,
        "the host's key is not the pinned one: check it out of band, then replace its known_hosts line",
    ),
    _code(
        "target-ssh-host-unknown",
        Category.TARGET,
        "add the host's key (checked out of band) to the target's known_hosts file: no trust on first use",
    ),
    _code(
        "target-ssh-key-unusable",
        Category.TARGET,
        "key_file must be a private key of mode 0600 (its passphrase in key_passphrase_env), or use agent: true",
    ),
    _code(
        "target-ssh-known-hosts-invalid",
        Category.TARGET,
        "point known_hosts at a readable OpenSSH known_hosts file holding the host's key",
    ),
    _code("target-throttled", Category.TARGET, "retry later"),
    _code(
        "target-unconfirmed",
        Category.TARGET,
        'the receiver must answer {"fingerprint": "<the fingerprint it received>"}',
    ),
    _code("target-unreachable", Category.TARGET, "check the network and the target's address; retry later"),
    _code("target-write-failed", Category.TARGET, "check that the directory exists and is writable by this user"),
    # --- plan
    _code(
        "issuance-backoff",
        Category.PLAN,
        "`certreconcile rotate NAME` tries again at once; or change the declaration, or wait",
    ),
    _code("rate-limit-exact-set", Category.PLAN, "spread the issuances over more days, or raise the limit with the CA"),
    _code("rate-limit-new-orders", Category.PLAN, "spread the issuances over more hours (or apply fewer at once)"),
    _code(
        "rate-limit-registered-domain",
        Category.PLAN,
        "spread the issuances over more days, or ask the CA for a higher limit",
    ),
    # --- apply
    _code(
        "allow-destroy-mismatch",
        Category.APPLY,
        "review the plan, then re-run with --allow-destroy N, N the number of certificates it revokes or retires",
    ),
    _code("already-revoked", Category.APPLY, "nothing to do; `certreconcile status` shows it"),
    _code(
        "apply-failed",
        Category.APPLY,
        "see the failed changes above; fix their cause and apply again (the others were applied)",
    ),
    _code(
        "destroy-needs-intent",
        Category.APPLY,
        "review the destructive changes, then re-run with --allow-destroy N (the number shown)",
    ),
    _code(
        "distribution-failed",
        Category.APPLY,
        "see the failed targets in the message; fix them and distribute again",
    ),
    _code("internal-error", Category.APPLY, "a bug: report it with the message; the other changes were applied"),
    _code("manager-failed", Category.APPLY, "see the message; the change is recorded in the audit log"),
    _code("revoke-raced", Category.APPLY, "check `certreconcile status` and try again"),
    _code(
        "revoke-still-served",
        Category.APPLY,
        "deploy a replacement first (`certreconcile rotate NAME`), or pass --force",
    ),
    _code(
        "worker-died",
        Category.APPLY,
        "apply again: the journal lets the next apply finish the change (see the system log for why it ended)",
    ),
    _code(
        "worker-start-failed",
        Category.APPLY,
        "see the message for why the worker could not build its environment; apply again, or with --workers 1",
    ),
    _code(
        "workers-http01-standalone",
        Category.APPLY,
        "use --workers 1, or give the issuer http01.webroot (or the certificates DNS-01)",
    ),
    # --- fleet: the agent on a server host (certreconcile.agent)
    _code("agent-bundle-mismatch", Category.FLEET, "send the certificate with its own key and fingerprint"),
    _code(
        "agent-certificate-refused",
        Category.FLEET,
        "sign a CSR from this agent with the fleet CA of its ca_file; the certificate must be valid now",
    ),
    _code(
        "agent-client-refused",
        Category.FLEET,
        "only the applier's certificate (fleet CA, URI SAN spiffe://certreconcile/applier) may call an agent",
    ),
    _code(
        "agent-config-forbidden-setting",
        Category.FLEET,
        "remove it: the agent holds no database URL and no KMS settings, the applier does",
    ),
    _code("agent-config-invalid", Category.FLEET, "fix the agent's configuration file at the positions listed"),
    _code(
        "agent-environment-forbidden",
        Category.FLEET,
        "unset the variables named in the agent's service (e.g. its systemd unit); only the applier needs them",
    ),
    _code("agent-listen-failed", Category.FLEET, "choose a free address in `listen`, or stop what holds it"),
    _code(
        "agent-name-mismatch",
        Category.FLEET,
        "the certificate must be for this agent's key and carry spiffe://certreconcile/agent/<its name>",
    ),
    _code("agent-request-invalid", Category.FLEET, "POST a request of certreconcile.fleet.protocol to /v1/<operation>"),
    _code("agent-request-replayed", Category.FLEET, "send each request with a fresh nonce"),
    _code(
        "agent-request-stale",
        Category.FLEET,
        "check both hosts' clocks (NTP); a request is valid within the agent's request_window only",
    ),
    _code(
        "agent-target-kind-refused",
        Category.FLEET,
        "an agent runs local targets only: declare agent, ssh and aws_acm targets centrally",
    ),
    _code(
        "agent-target-unknown",
        Category.FLEET,
        "declare the target in the agent's configuration, or name one of its local targets",
    ),
    _code(
        "agent-tls-invalid",
        Category.FLEET,
        "make the key with `agent csr`, enrol it (`agent enroll`), and check key_file (0600), cert_file, ca_file",
    ),
    # --- notify
    _code("notify-failed", Category.NOTIFY, "is the receiver up and answering 2xx? the notification is retried"),
    _code("notify-env-unset", Category.NOTIFY, "export the variable named by the sink's *_env key where run runs"),
    _code("notify-secret-invalid", Category.NOTIFY, "a webhook secret is whsec_ and base64 of 16 to 64 random bytes"),
    _code("notify-smtp-failed", Category.NOTIFY, "check the SMTP server, its STARTTLS, the login and the addresses"),
    _code("notify-apprise-missing", Category.NOTIFY, "pip install 'certreconcile[apprise]'"),
    _code("notify-apprise-failed", Category.NOTIFY, "check each Apprise URL's scheme, the service and its token"),
)

#: Every registered code, by code.
REGISTRY: Mapping[str, ErrorCode] = MappingProxyType({entry.code: entry for entry in _CODES})


def is_registered(code: str) -> bool:
    return code in REGISTRY


# ---------------------------------------------------------------- the README's table

README_START = "<!-- error-codes:start: generated by `python -m certreconcile.error_codes --write README.md` -->"
README_END = "<!-- error-codes:end -->"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table() -> str:
    """The README's table: one row per code, grouped by category in the order of :class:`Category`."""
    lines = ["| code | category | exit | hint |", "|---|---|---|---|"]
    for category in Category:
        for entry in sorted((e for e in _CODES if e.category is category), key=lambda e: e.code):
            lines.append(f"| `{entry.code}` | {category.value} | {entry.exit_code} | {_cell(entry.hint)} |")
    return "\n".join(lines) + "\n"


def replace_readme_section(text: str) -> str:
    """``text`` (the README) with the table between the markers regenerated."""
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {README_START!r} ... {README_END!r} section")
    return text[: start + len(README_START)] + "\n\n" + markdown_table() + "\n" + text[end:]


def main(argv: Sequence[str]) -> int:
    """``--write README.md`` rewrites the README's section; without arguments, print the table."""
    if not argv:
        sys.stdout.write(markdown_table())
        return 0
    if len(argv) != 2 or argv[0] != "--write":
        sys.stderr.write("usage: python -m certreconcile.error_codes [--write README.md]\n")
        return 1
    path = Path(argv[1])
    path.write_text(replace_readme_section(path.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
