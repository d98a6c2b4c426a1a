"""Behind the protocol's name pattern, the file-writing targets an agent runs refuse a name that climbs out.

The agent refuses such a name before any target sees it (``agent-request-invalid``, tested against the
running agent); this is the second wall: each file-writing kind, handed a bundle named ``../x`` or
``a/../../x`` directly, raises ``target-path-unsafe`` and writes nothing, inside or outside its directory.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from certreconcile.errors import TargetError
from certreconcile.plugins.ports import Target
from certreconcile.plugins.targets.files import FilesTarget
from certreconcile.plugins.targets.files_config import FilesTargetConfig
from certreconcile.plugins.targets.haproxy import HaproxyTarget
from certreconcile.plugins.targets.haproxy_config import HaproxyTargetConfig
from certreconcile.plugins.targets.nginx import NginxTarget
from certreconcile.plugins.targets.nginx_config import NginxTargetConfig
from certreconcile.testing.target_contract import self_signed_bundle

MAKERS: dict[str, Callable[[Path], Target]] = {
    "files": lambda out: FilesTarget("site", FilesTargetConfig(dir=str(out)), out.parent),
    "nginx": lambda out: NginxTarget(
        "edge-nginx", NginxTargetConfig(cert_dir=str(out), test_command="true", reload_command="true"), out.parent
    ),
    "haproxy": lambda out: HaproxyTarget(
        "edge-haproxy", HaproxyTargetConfig(cert_dir=str(out), test_command="true", reload_command="true"), out.parent
    ),
}


@pytest.mark.parametrize("kind", sorted(MAKERS))
@pytest.mark.parametrize("name", ["../escape", "shop/../../escape", "..", "/tmp/escape"])
def test_a_name_that_climbs_out_is_refused_and_nothing_is_written(tmp_path: Path, kind: str, name: str) -> None:
    out = tmp_path / "deep" / "out"
    out.mkdir(parents=True)
    bundle = dataclasses.replace(self_signed_bundle("shop", ("shop.example.test",)), name=name)
    with pytest.raises(TargetError) as caught:
        MAKERS[kind](out).deploy(bundle)
    assert caught.value.code == "target-path-unsafe"
    assert sorted(str(path.relative_to(tmp_path)) for path in tmp_path.rglob("*")) == ["deep", "deep/out"]
