"""The plug-in kinds: found by entry points only, cheap to import, their durations parsed once."""

from __future__ import annotations

import inspect
import subprocess
import sys
from datetime import timedelta
from importlib.metadata import distribution

import pytest
from pydantic import ValidationError

from certreconcile.desired import plugin_fingerprint
from certreconcile.desired.documents import TargetEntry, entry_model
from certreconcile.desired.fields import ParsedDuration
from certreconcile.desired.kinds import GROUPS, config_class, kind_module, kind_names
from certreconcile.desired.model import DEFAULT_VERIFY_TIMEOUT
from certreconcile.plugins.issuers.local_ca_config import LocalCaConfig


def test_the_built_in_kinds_are_the_entry_points_of_the_package() -> None:
    """No second list: the kinds are what pyproject.toml registers, in the four groups."""
    registered: dict[str, set[str]] = {group: set() for group in GROUPS}
    for entry in distribution("certreconcile").entry_points:
        group = entry.group.removeprefix("certreconcile.")
        if group in registered:
            registered[group].add(entry.name)
            assert kind_module(group, entry.name).__name__ == entry.value
    for group, kinds in registered.items():
        assert set(kind_names(group, builtin_only=True)) == kinds, group
    assert set(kind_names("targets", builtin_only=True)) >= {"files", "nginx", "webhook", "aws_acm"}


def test_kind_modules_import_no_sdk() -> None:
    """Validation imports every kind module: none may load an SDK (plan of 10k certificates stays light)."""
    code = (
        "import sys\n"
        "from certreconcile.desired.kinds import GROUPS, kind_module, kind_names\n"
        "from certreconcile.desired.documents import desired_document_model\n"
        "desired_document_model()\n"
        "modules = [kind_module(g, k) for g in GROUPS for k in kind_names(g)]\n"
        "heavy = {'boto3', 'botocore', 'hvac', 'acme', 'josepy', 'httpx', 'dns', 'requests', 'cryptography'}\n"
        "loaded = heavy & {name.split('.')[0] for name in sys.modules}\n"
        "assert not loaded, loaded\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


def test_every_kind_module_exports_a_forbidding_config_and_a_factory() -> None:
    for group in GROUPS:
        for kind in kind_names(group):
            module = kind_module(group, kind)
            assert callable(module.create)
            assert config_class(group, kind).model_config.get("extra") == "forbid", (group, kind)


def test_durations_are_parsed_once_at_validation() -> None:
    config = LocalCaConfig.model_validate({"lifetime": "2d"})
    assert isinstance(config.lifetime, ParsedDuration)
    assert config.lifetime.delta == timedelta(days=2)
    assert config.ca_lifetime.delta == timedelta(days=3650)  # the default is parsed too
    # still the written string: the dump, and so the fingerprint, are those of the text
    written = {"common_name": "certreconcile local CA", "lifetime": "2d", "ca_lifetime": "3650d"}
    assert config.model_dump(mode="json") == written
    constructed = LocalCaConfig.model_construct(**written)  # plain strings, no validation
    assert plugin_fingerprint("local_ca", config) == plugin_fingerprint("local_ca", constructed)
    zero = LocalCaConfig.model_validate({"lifetime": "0s"})  # reported by the value checks, with its position
    assert zero.lifetime.delta_or_none is None and zero.lifetime.error is not None
    with pytest.raises(ValueError, match="longer than zero"):
        _ = zero.lifetime.delta
    with pytest.raises(ValidationError):
        LocalCaConfig.model_validate({"lifetime": "2 days"})


def test_no_adapter_parses_a_duration() -> None:
    import certreconcile.plugins.issuers.acme.issuer as acme
    import certreconcile.plugins.targets.webhook_config as webhook
    from certreconcile.plugins.issuers import local_ca

    for module in (acme, local_ca, webhook):
        assert "parse_duration" not in inspect.getsource(module), module.__name__


def test_one_verification_default() -> None:
    entry = entry_model(TargetEntry).model_validate({"files": {"dir": "/srv/certs"}})
    assert entry.verify_timeout.delta == DEFAULT_VERIFY_TIMEOUT
    from certreconcile.plugins.targets.files import FilesTarget
    from certreconcile.plugins.targets.webhook import WebhookTarget

    for adapter in (FilesTarget, WebhookTarget):
        default = inspect.signature(adapter).parameters["verify_timeout"].default
        assert default == DEFAULT_VERIFY_TIMEOUT, adapter
