"""A PNG of score against context length, one line per configuration and one panel per task
family. Needs matplotlib (``pip install 'rlm-core[eval]'``); without it no plot is made and
:func:`plot_scores` says so."""

from __future__ import annotations

from pathlib import Path

from rlm_core.eval.report import Summary
from rlm_core.eval.suites import length_label

MISSING = "no plot: matplotlib is not installed (pip install 'rlm-core[eval]')"


def plot_scores(summary: Summary, path: str | Path) -> tuple[Path | None, str]:
    """Write the plot to ``path``; return ``(path, message)``, or ``(None, why not)``."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None, MISSING
    families = sorted({family for c in summary.configs for family, _ in c.by_length})
    if not families:
        return None, "no plot: no results"
    figure, axes = plt.subplots(
        1, len(families), figsize=(4.5 * len(families), 3.6), squeeze=False, sharey=True
    )
    lengths = sorted({length for c in summary.configs for _, length in c.by_length})
    for ax, family in zip(axes[0], families, strict=True):
        for config in summary.configs:
            points = sorted((n, s) for (f, n), s in config.by_length.items() if f == family)
            if points:
                xs, ys = zip(*points, strict=True)
                ax.plot(xs, ys, marker="o", label=config.name)
        ax.set_title(family)
        ax.set_xscale("log", base=2)
        ax.set_xticks(lengths, [length_label(n) for n in lengths])
        ax.set_xlabel("context length (tokens)")
        ax.set_ylim(-0.05, 1.05)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("score")
    axes[0][-1].legend(loc="lower left", fontsize="small")
    figure.tight_layout()
    out = Path(path)
    figure.savefig(out, dpi=110)
    plt.close(figure)
    return out, f"plot: {out}"
