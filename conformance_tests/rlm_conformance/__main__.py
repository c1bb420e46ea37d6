"""``python -m rlm_conformance``: list every standard test (``--markdown`` for the docs
table)."""

from __future__ import annotations

import argparse
import sys

from rlm_conformance.cases import CASES
from rlm_conformance.suite import GROUPS


def table() -> str:
    """Every standard test as a Markdown table, grouped as the suite is."""
    order = {group.__name__: i for i, group in enumerate(GROUPS)}
    rows = ["| id | test | needs |", "|---|---|---|"]
    cases = sorted(CASES.values(), key=lambda c: (order.get(c.group, -1), c.id))
    for case in cases:
        needs = ", ".join(f"`{c}`" for c in case.requires) or "-"
        rows.append(f"| {case.id} | {case.title} | {needs} |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Print the list of standard tests."""
    parser = argparse.ArgumentParser(prog="python -m rlm_conformance", description=__doc__)
    parser.add_argument("--markdown", action="store_true", help="print the docs table")
    args = parser.parse_args(argv)
    if args.markdown:
        sys.stdout.write(table())
        return 0
    for case in sorted(CASES.values(), key=lambda c: c.id):
        needs = f"  [needs {', '.join(case.requires)}]" if case.requires else ""
        print(f"{case.id}  {case.title}{needs}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
