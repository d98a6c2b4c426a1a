"""Time load + validate of a desired-state directory with 1,000 and 10,000 certificates.

Run: python bench/desired_load.py   (design target: 10k well under 0.5 s)
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

from certreconcile.desired import load_desired

HEADER = """\
issuers:
  ca:
    local_ca: {common_name: bench CA, lifetime: 90d}
targets:
  out:
    files: {dir: out}
policy:
  allowed_domains: ["*.example.com"]
"""


def write_repo(directory: Path, count: int) -> None:
    (directory / "plugins.yaml").write_text(HEADER)
    lines = ["certificates:"]
    for index in range(count):
        lines += [
            f"  - name: cert-{index}",
            f"    domains: [svc-{index}.example.com, www.svc-{index}.example.com]",
            "    issuer: ca",
            f"    key: {'rsa-2048' if index % 10 == 0 else 'ecdsa-p256'}",
            "    renew_before: 30d",
            "    targets: [out]",
        ]
    (directory / "certificates.yaml").write_text("\n".join(lines) + "\n")


def main() -> None:
    for count in (1_000, 10_000):
        with tempfile.TemporaryDirectory() as temp:
            directory = Path(temp)
            write_repo(directory, count)
            size = (directory / "certificates.yaml").stat().st_size
            best = float("inf")
            for _ in range(5):
                start = time.perf_counter()
                state = load_desired(directory)
                best = min(best, time.perf_counter() - start)
            assert len(state.certificates) == count
            print(
                f"{count:>6} certificates ({size / 1e6:.2f} MB): load+validate best of 5 {best * 1000:.0f} ms"
            )


if __name__ == "__main__":
    main()
