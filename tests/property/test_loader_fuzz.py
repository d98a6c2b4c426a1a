"""Fuzz of the desired-state loader: random bytes and mutated valid files, read like a checkout.

For every input: ``validate_directory`` returns diagnostics and raises nothing; ``load_desired``
raises only :class:`DesiredStateError` (and succeeds exactly when there is no diagnostic);
every diagnostic names the file and a ``line:col`` inside it; and the loader's peak memory
(tracemalloc) stays under :data:`PEAK_LIMIT` for an input of at most :data:`MAX_INPUT` bytes.

``make test`` runs a bounded number of examples (about 30 s); ``CERTRECONCILE_SOAK=1`` selects the
``soak`` profile (many more examples). ``pytest -s`` prints how many ran.
"""

from __future__ import annotations

import os
import re
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from certreconcile.desired import load_desired, validate_directory
from certreconcile.errors import DesiredStateError

ROOT = Path(__file__).resolve().parents[2]
SEEDS = sorted(
    [*(ROOT / "examples" / "desired-state").glob("*.yaml"), *(ROOT / "tests" / "data" / "valid").rglob("*.yaml")]
)
SEED_TEXTS = [path.read_bytes() for path in SEEDS]
MAX_INPUT = 16 * 1024  # bytes of one generated file
PEAK_LIMIT = 64 << 20  # bytes traced while one input is validated and loaded
BREAKS = re.compile(rb"\r\n|\r|\n")
RUN = {"examples": 0, "with_diagnostics": 0}

settings.register_profile(
    "loader-fuzz", max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "loader-fuzz-soak", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
PROFILE = settings.get_profile("loader-fuzz-soak" if os.environ.get("CERTRECONCILE_SOAK") == "1" else "loader-fuzz")

# Bytes that break YAML or the guards in interesting ways when dropped into a valid file.
INSERTIONS = [
    b"\x00", b"\x07", b"\x1b[31m", b"\x7f", b"\x85", b"\xc2\x85", b"\xe2\x80\xa8", b"\xe2\x80\xae", b"\xef\xbb\xbf",
    b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\t", b"\r", b"\n", b"\n---\n", b"\n...\n", b"&a ", b"*a", b"<<: ",
    b"!!python/object:os.system ", b"!!binary ", b"!e ", b"[", b"]", b"{", b"}", b"- ", b": ", b"? ", b"#", b"'",
    b'"', b"|", b">", b"%YAML 1.1\n", b"~", b"9" * 40, b"\xd0\xb0", b"\xce\xbf", b"xn--", b"../", b"$(id)", b"`",
]


@st.composite
def mutated_seed(draw: st.DrawFn) -> bytes:
    """A valid file with a few byte flips, insertions, truncations, duplicated lines and re-indentations."""
    data = bytearray(draw(st.sampled_from(SEED_TEXTS)))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "insert", "truncate", "duplicate", "indent", "dedent", "delete"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if kind == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif kind == "insert":
            data[at:at] = draw(st.sampled_from(INSERTIONS) | st.binary(min_size=1, max_size=8))
        elif kind == "truncate":
            del data[at:]
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        else:
            lines = data.split(b"\n")
            index = draw(st.integers(0, len(lines) - 1))
            if kind == "duplicate":
                lines.insert(index, lines[index] * draw(st.integers(1, 3)))
            elif kind == "indent":
                lines[index] = b" " * draw(st.integers(1, 5)) + lines[index]
            else:
                lines[index] = lines[index].lstrip(b" ")
            data = bytearray(b"\n".join(lines))
    return bytes(data[:MAX_INPUT])


@st.composite
def nested(draw: st.DrawFn) -> bytes:
    """Deep flow or block nesting and alias chains, sized by Hypothesis."""
    depth = draw(st.integers(1, 3000))
    shape = draw(st.sampled_from(["flow", "block", "aliases"]))
    if shape == "flow":
        body = b"x: " + b"[" * depth + b"]" * draw(st.integers(0, depth))
    elif shape == "block":
        body = b"x:\n" + b"- " * depth + b"a\n"
    else:
        levels = min(depth, 80)
        body = b"a0: &a0 [x, x]\n" + b"".join(
            b"a%d: &a%d [*a%d, *a%d, *a%d]\n" % (i, i, i - 1, i - 1, i - 1) for i in range(1, levels)
        )
    return body[:MAX_INPUT] + draw(st.sampled_from(SEED_TEXTS))


INPUTS = st.one_of(
    st.binary(max_size=2048),
    mutated_seed(),
    mutated_seed(),
    nested(),
    st.text(max_size=512).map(lambda text: text.encode("utf-8", "surrogatepass")),
)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="loader-fuzz-") as name:
        yield Path(name)


def bounds(data: bytes) -> tuple[int, int]:
    """The highest line and column a diagnostic may name (one past the end, for end-of-file marks)."""
    lines = BREAKS.split(data)
    return len(lines) + 1, max(len(line) for line in lines) + 2


@PROFILE
@given(data=INPUTS)
def test_loader_survives_hostile_bytes(workdir: Path, data: bytes) -> None:
    case = Path(tempfile.mkdtemp(dir=workdir))
    (case / "c.yaml").write_bytes(data)
    tracemalloc.start()
    try:
        diagnostics = validate_directory(case)
        try:
            load_desired(case)
            loaded, code = True, ""
        except DesiredStateError as exc:
            loaded, code = False, exc.code
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    RUN["examples"] += 1
    RUN["with_diagnostics"] += bool(diagnostics)
    assert peak < PEAK_LIMIT, f"{peak >> 20} MiB traced for {len(data)} bytes"
    assert loaded == (diagnostics == []), diagnostics
    assert code in ("", "desired-state-invalid")
    max_line, max_column = bounds(data)
    for diagnostic in diagnostics:
        location = diagnostic.location
        assert location.file == "c.yaml", diagnostic
        assert 1 <= location.line <= max_line, (diagnostic, max_line)
        assert 1 <= location.column <= max_column, (diagnostic, max_column)
        assert str(diagnostic).startswith(f"c.yaml:{location.line}:{location.column}: error[{diagnostic.code}]: ")
        assert re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", diagnostic.code), diagnostic.code


def test_report_examples_run() -> None:
    """Prints the count (``pytest -s``); runs after the fuzz in file order."""
    print(f"\nloader fuzz: {RUN['examples']} examples, {RUN['with_diagnostics']} with diagnostics")
    assert RUN["examples"] == 0 or RUN["with_diagnostics"] > 0
