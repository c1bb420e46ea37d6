"""What a run of the suite did, per environment setup: the summary's source."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import pytest

from rlm_conformance.cases import CASES

if TYPE_CHECKING:
    from rlm_conformance.setup import EnvironmentSetup


@dataclass(frozen=True)
class SetupInfo:
    """An environment setup as the summary names it."""

    label: str
    distribution: str
    version: str
    claimed: frozenset[str]

    @classmethod
    def of(cls, setup: EnvironmentSetup, claimed: frozenset[str]) -> SetupInfo:
        """Describe ``setup`` (its distribution is looked up once per setup)."""
        key = (setup.reference(), setup.describe(), claimed)
        known = _described.get(key)
        if known is None:
            dist, version = setup.distribution()
            known = _described[key] = cls(setup.describe(), dist, version, claimed)
        return known


_described: dict[tuple[str, str, frozenset[str]], SetupInfo] = {}


SETUP_KEY = pytest.StashKey[SetupInfo]()
SKIPPED_FOR_KEY = pytest.StashKey[str]()


@dataclass
class SetupRecord:
    """Outcomes of one setup's standard tests."""

    info: SetupInfo
    outcomes: dict[str, str] = field(default_factory=dict)
    """test id -> passed / failed / skipped / xfailed / xpassed"""
    requires: dict[str, tuple[str, ...]] = field(default_factory=dict)
    skipped_for: dict[str, str] = field(default_factory=dict)
    """test id -> the unclaimed capability it was skipped for"""
    other_skips: dict[str, str] = field(default_factory=dict)
    """test id -> why it skipped, when not for a capability"""

    def counts(self) -> Counter[str]:
        """How many tests ended each way."""
        return Counter(self.outcomes.values())

    def verified(self) -> list[str]:
        """Claimed capabilities that at least one test needing them passed, and no test
        needing them failed (tests skipped for another reason do not count)."""
        tested: dict[str, list[str]] = defaultdict(list)
        for test_id, needs in self.requires.items():
            for capability in needs:
                tested[capability].append(self.outcomes.get(test_id, "missing"))
        return sorted(
            c
            for c in self.info.claimed
            if "passed" in tested.get(c, ()) and "failed" not in tested[c]
        )

    def failed_claims(self) -> list[str]:
        """Claimed capabilities with a failed test."""
        failed: set[str] = set()
        for test_id, needs in self.requires.items():
            if self.outcomes.get(test_id) == "failed":
                failed.update(c for c in needs if c in self.info.claimed)
        return sorted(failed)

    def untested_claims(self) -> list[str]:
        """Claimed capabilities no standard test needs."""
        import rlm_conformance.suite  # noqa: F401  (its tests fill CASES: a pytest-xdist
        # controller that prints the summary has not imported them)

        needed = {c for case in CASES.values() for c in case.requires}
        return sorted(self.info.claimed - needed)


@dataclass
class RunRecord:
    """Every setup's record, in the order they first ran."""

    setups: dict[str, SetupRecord] = field(default_factory=dict)

    def add(
        self,
        info: SetupInfo,
        test_id: str,
        requires: tuple[str, ...],
        outcome: str,
        skipped_for: str | None,
        skip_reason: str | None,
    ) -> None:
        """Record one test's outcome (a failure in setup or teardown wins over a pass)."""
        record = self.setups.setdefault(info.label, SetupRecord(info))
        previous = record.outcomes.get(test_id)
        if previous == "failed" or (previous is not None and outcome == "passed"):
            return
        record.outcomes[test_id] = outcome
        record.requires[test_id] = requires
        if skipped_for is not None:
            record.skipped_for[test_id] = skipped_for
        elif skip_reason is not None:
            record.other_skips[test_id] = skip_reason

    def lines(self) -> list[str]:
        """The summary, one block per setup."""
        out: list[str] = []
        for record in self.setups.values():
            info = record.info
            counts = record.counts()
            ran = sum(counts[k] for k in ("passed", "failed", "xfailed", "xpassed"))
            out.append(f"environment: {info.label}")
            out.append(f"  provided by: {info.distribution} {info.version}")
            out.append(
                f"  tests: {len(record.outcomes)} selected, {ran} ran, {counts['passed']} passed, "
                f"{counts['failed']} failed, {counts['skipped']} skipped"
                + (f", {counts['xfailed']} xfailed" if counts["xfailed"] else "")
                + (f", {counts['xpassed']} xpassed" if counts["xpassed"] else "")
            )
            by_capability = Counter(record.skipped_for.values())
            if by_capability:
                parts = ", ".join(f"{c} ({n})" for c, n in sorted(by_capability.items()))
                out.append(f"  skipped, capability not claimed: {parts}")
            if record.other_skips:
                out.append(f"  skipped at run time: {_by_reason(record.other_skips)}")
            out.append(f"  claimed: {', '.join(sorted(info.claimed)) or '-'}")
            out.append(f"  verified: {', '.join(record.verified()) or '-'}")
            failed = record.failed_claims()
            if failed:
                out.append(f"  claimed but FAILED: {', '.join(failed)}")
            failed_ids = sorted(i for i, o in record.outcomes.items() if o == "failed")
            if failed_ids:
                out.append(f"  failed tests: {', '.join(failed_ids)}")
            untested = record.untested_claims()
            if untested:
                out.append(f"  claimed, no standard test: {', '.join(untested)}")
        return out


MAX_IDS_LISTED = 6
"""Test ids named per skip reason in the summary; beyond it, only their number."""


def _by_reason(skips: dict[str, str]) -> str:
    """``LIF-007: why``, or ``why (CEL-010, LIF-006)`` for a reason several tests share,
    or ``why (100 tests)`` for a reason most share (credentials missing, say)."""
    ids_by_reason: dict[str, list[str]] = defaultdict(list)
    for test_id, why in sorted(skips.items()):
        ids_by_reason[why].append(test_id)
    parts = []
    for why, ids in sorted(ids_by_reason.items(), key=lambda item: item[1][0]):
        if len(ids) == 1:
            parts.append(f"{ids[0]}: {why}")
        elif len(ids) <= MAX_IDS_LISTED:
            parts.append(f"{why} ({', '.join(ids)})")
        else:
            parts.append(f"{why} ({len(ids)} tests)")
    return "; ".join(parts)
