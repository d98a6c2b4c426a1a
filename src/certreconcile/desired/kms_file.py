"""A YAML file holding only a ``kms:`` section (``kms rewrap --to FILE`` / ``--from FILE``).

Validated by the same :class:`~certreconcile.desired.documents.KmsEntry` model as the
desired state's own ``kms`` section.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from certreconcile.desired import kms_cache_spec, plugin_fingerprint
from certreconcile.desired.documents import KmsEntry, entry_model
from certreconcile.desired.model import KmsSpec
from certreconcile.errors import ConfigError

__all__ = ["load_kms_file"]


def load_kms_file(path: Path) -> KmsSpec:
    """The KMS declared by the ``kms:`` section of ``path``; ConfigError when missing or invalid."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}", code="kms-file-invalid") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML", code="kms-file-invalid") from exc
    if not isinstance(data, dict) or "kms" not in data:
        raise ConfigError(
            f"{path} has no kms section",
            code="kms-file-invalid",
            hint="write e.g. `kms: {aws: {key_id: alias/certs}}`",
        )
    try:
        entry = entry_model(KmsEntry).model_validate(data["kms"])
    except ValidationError as exc:
        problems = "; ".join(
            f"kms.{'.'.join(str(part) for part in error['loc'])}: {error['msg']}" if error["loc"] else error["msg"]
            for error in exc.errors()
        )
        raise ConfigError(f"{path}: {problems}", code="kms-file-invalid", hint="see `certreconcile schema`") from exc
    kind, config = entry.kind()
    return KmsSpec(kind, kind, config, plugin_fingerprint(kind, config), cache=kms_cache_spec(entry.cache))
