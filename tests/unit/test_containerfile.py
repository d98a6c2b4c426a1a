"""The Containerfile's structure, read instruction by instruction (the build itself runs in `make image`).

Multi-stage (the wheel is built in a builder stage), the final stage without compilers or build tools,
a non-root user, ``certreconcile`` as the entrypoint, the state directory as a volume where
CERTRECONCILE_DATA_DIR points, the base as a build argument (no registry is needed).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTAINERFILE = ROOT / "Containerfile"
COMPILERS = re.compile(
    r"\b(gcc|g\+\+|clang|cc|c\+\+|make|build-essential|python3-dev|libpython3[.\d]*-dev|cargo|rustc)\b"
)


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def args(self, keyword: str) -> list[str]:
        return [rest for word, rest in self.instructions if word == keyword]


def parse(text: str) -> tuple[list[str], list[Stage]]:
    """(global ARGs, stages): each instruction with its continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, "a continuation line at the end of the Containerfile"
    global_args: list[str] = []
    stages: list[Stage] = []
    for line in logical:
        word, _, rest = line.partition(" ")
        word = word.upper()
        if word == "FROM":
            parts = rest.split()
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            stages.append(Stage(parts[0], name))
        elif not stages:
            assert word == "ARG", f"only ARG may come before the first FROM, not {word}"
            global_args.append(rest)
        else:
            stages[-1].instructions.append((word, rest.strip()))
    return global_args, stages


@pytest.fixture(scope="module")
def containerfile() -> tuple[list[str], list[Stage]]:
    return parse(CONTAINERFILE.read_text())


def test_the_base_is_a_build_argument(containerfile: tuple[list[str], list[Stage]]) -> None:
    global_args, stages = containerfile
    assert any(arg.startswith("BASE=") or arg == "BASE" for arg in global_args)
    assert {stage.base for stage in stages} == {"${BASE}"}


def test_multi_stage_the_wheel_is_built_in_the_builder(containerfile: tuple[list[str], list[Stage]]) -> None:
    _, stages = containerfile
    assert len(stages) >= 2
    builder, final = stages[0], stages[-1]
    assert builder.name == "builder"
    assert any("python -m build --wheel" in run or "pip wheel" in run for run in builder.args("RUN"))
    copies = final.args("COPY")
    assert copies and all(copy.startswith("--from=builder ") for copy in copies), copies
    assert not any(copy.split()[-2].startswith(("src", ".")) for copy in copies)  # no sources, only the wheel


def test_the_final_stage_has_no_compiler_nor_build_tool(containerfile: tuple[list[str], list[Stage]]) -> None:
    _, stages = containerfile
    final = stages[-1]
    for run in final.args("RUN"):
        installs = re.findall(r"(?:apt-get|apt) install ([^&;|]*)", run)
        for packages in installs:
            assert not COMPILERS.search(packages), packages
        assert "--only-binary=:all:" in run or "pip install" not in run, "pip could compile an sdist"
        assert not re.search(r"pip install[^&;|]*\bbuild\b(?!s)", run.replace("/tmp/wheels", ""))
    assert not COMPILERS.search(" ".join(final.args("ENV")))


def test_a_non_root_user_runs_certreconcile(containerfile: tuple[list[str], list[Stage]]) -> None:
    _, stages = containerfile
    final = stages[-1]
    users = final.args("USER")
    assert users, "no USER in the final stage: the image would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0")
    assert [word for word, _ in final.instructions].index("USER") < [w for w, _ in final.instructions].index(
        "ENTRYPOINT"
    )
    if user.isdigit():  # the uid exists in the image's passwd
        assert any(f":x:{user}:" in run for run in final.args("RUN"))


def test_entrypoint_is_certreconcile_in_exec_form(containerfile: tuple[list[str], list[Stage]]) -> None:
    _, stages = containerfile
    (entrypoint,) = stages[-1].args("ENTRYPOINT")
    assert json.loads(entrypoint) == ["certreconcile"]


def test_the_state_directory_is_a_volume(containerfile: tuple[list[str], list[Stage]]) -> None:
    _, stages = containerfile
    final = stages[-1]
    env = dict(
        item.split("=", 1) for line in final.args("ENV") for item in shlex.split(line) if "=" in item
    )
    data_dir = env["CERTRECONCILE_DATA_DIR"]
    volumes = [path for line in final.args("VOLUME") for path in json.loads(line)]
    assert data_dir in volumes
    assert any(data_dir in run and "chown" in run for run in final.args("RUN")), "the volume is not the user's"


def test_the_build_context_leaves_out_the_work_tree() -> None:
    ignore = (ROOT / ".containerignore").read_text().splitlines()
    assert ignore[ignore.index("*") :][:1] == ["*"]  # everything out, then only what the wheel needs
    allowed = {line[1:] for line in ignore if line.startswith("!")}
    assert allowed == {"pyproject.toml", "README.md", "LICENSE", "src"}


def test_make_image_builds_and_runs_it_with_buildah() -> None:
    build = (ROOT / "packaging" / "container" / "build-image.sh").read_text()
    run = (ROOT / "packaging" / "container" / "test-image.sh").read_text()
    assert "--storage-driver vfs" in build and "--isolation chroot" in build
    assert "mmdebstrap" in build and "--build-arg \"BASE=" in build
    assert "certreconcile --version" in run and "certreconcile apply --auto-approve" in run
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^image: image-deps\n\tIMAGE=\$\(IMAGE\) packaging/container/build-image.sh\n", makefile, re.M)
    assert re.search(r"^IMAGE_DEBIAN_PACKAGES \?= buildah mmdebstrap$", makefile, re.M)
