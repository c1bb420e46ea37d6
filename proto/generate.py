"""Regenerate rlm_core/_proto/ from proto/rlm/v1/*.proto (``make proto``).

``--check`` regenerates into a temporary directory and fails when the committed files differ,
so a changed .proto without regenerated code cannot go unnoticed.
"""

from __future__ import annotations

import argparse
import filecmp
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
OUT = ROOT / "rlm_core" / "_proto"
PACKAGE = "rlm_core._proto"
HEADER = "# Generated from proto/ by `make proto`. Do not edit.\n"


def generate(out: Path) -> list[Path]:
    """Run protoc for every .proto file into ``out``; return the files written."""
    from grpc_tools import protoc  # dev dependency (grpcio-tools)

    protos = sorted(str(p.relative_to(PROTO_ROOT)) for p in PROTO_ROOT.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    before = set(out.rglob("*.py*"))
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    written = []
    for path in sorted(set(out.rglob("*.py*")) - before | _generated(out, protos)):
        text = path.read_text(encoding="utf-8")
        # protoc emits top-level imports (`from rlm.v1 import ...`); make them package-relative.
        text = re.sub(r"^from rlm\.v1 import", f"from {PACKAGE}.rlm.v1 import", text, flags=re.M)
        path.write_text(HEADER + text, encoding="utf-8")
        written.append(path)
    for package in {p.parent for p in written} | {out / "rlm"}:
        init = package / "__init__.py"
        if not init.exists():
            init.write_text(HEADER, encoding="utf-8")
            written.append(init)
    return written


def _generated(out: Path, protos: list[str]) -> set[Path]:
    names = set()
    for proto in protos:
        stem = out / proto.removesuffix(".proto")
        names |= {Path(f"{stem}_pb2.py"), Path(f"{stem}_pb2.pyi"), Path(f"{stem}_pb2_grpc.py")}
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if rlm_core/_proto is stale")
    args = parser.parse_args()
    if not args.check:
        generate(OUT)
        print(f"regenerated {OUT.relative_to(ROOT)}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp)
        (fresh / "__init__.py").write_text((OUT / "__init__.py").read_text(encoding="utf-8"))
        generate(fresh)
        stale = []
        for path in sorted(fresh.rglob("*.py*")):
            committed = OUT / path.relative_to(fresh)
            if not committed.exists() or not filecmp.cmp(path, committed, shallow=False):
                stale.append(str(committed.relative_to(ROOT)))
        if stale:
            print("generated protobuf code is stale; run `make proto`:", *stale, sep="\n  ")
            return 1
    print("generated protobuf code is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
