"""``certreconcile init DIR``: a desired-state repository to start from."""

from __future__ import annotations

from pathlib import Path

from certreconcile.errors import CertReconcileError
from certreconcile.plugins.factories import local_kms_key_file
from certreconcile.plugins.kms.local import ensure_master_key
from certreconcile.wiring import Settings

__all__ = ["scaffold"]

SCHEMA_URL = "https://raw.githubusercontent.com/certreconcile/certreconcile/main/schemas/desired-state.schema.json"

EXAMPLE = f"""# yaml-language-server: $schema={SCHEMA_URL}
# Declarations of the certificates this repository manages. `certreconcile plan` shows
# what apply would change; `certreconcile apply` makes it so.
kms:
  local: {{}}                      # the master key is .certreconcile/local-kms.key: back it up
issuers:
  internal:
    local_ca:
      common_name: Example Internal CA
      lifetime: 90d
targets:
  local-files:
    files:
      dir: .certreconcile/deploy  # relative paths are relative to this directory
policy:
  allowed_domains: [example.internal, "*.example.internal"]
certificates:
  - name: web
    domains: [web.example.internal, www.example.internal]
    issuer: internal
    key: ecdsa-p256
    targets: [local-files]
"""

GITIGNORE = """# certreconcile: the embedded database, the local KMS key and deployed files
.certreconcile/
"""


def scaffold(directory: Path) -> list[Path]:
    created = []
    directory.mkdir(parents=True, exist_ok=True)
    example = directory / "certificates.yaml"
    if any(directory.glob("*.yaml")):
        raise CertReconcileError(
            f"{directory} already holds YAML files",
            code="init-not-empty",
            hint="run init in a new or empty directory",
        )
    example.write_text(EXAMPLE)
    created.append(example)
    gitignore = directory / ".gitignore"
    if not gitignore.exists() or ".certreconcile/" not in gitignore.read_text():
        with gitignore.open("a") as handle:
            handle.write(GITIGNORE)
        created.append(gitignore)
    # The same key file apply will use: CERTRECONCILE_LOCAL_KMS_KEY_FILE, else <data dir>/local-kms.key.
    settings = Settings.from_env(directory)
    key_file = local_kms_key_file(None, settings.plugin_context)
    if ensure_master_key(key_file):
        created.append(key_file)
    return created
