"""Per-run reports: one JSON file plus PNG plots, readable without the code that made them."""

from __future__ import annotations

import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.common import write_json
from training.metrics import pr_curve


def _plt():
    # matplotlib is heavy to import: only the reports that draw a plot pay for it.
    import matplotlib

    matplotlib.use("Agg")  # headless: training hosts have no display
    # matplotlib is heavy to import: only the reports that draw a plot pay for it.
    import matplotlib.pyplot as plt

    return plt


def plot_pr_curves(path: Path, y_true: Sequence, scores: dict[str, Sequence], title: str) -> Path:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5, 4))
    base = float(np.mean(y_true)) if len(y_true) else 0.0
    for name, score in scores.items():
        precision, recall, _ = pr_curve(y_true, score)
        ax.step(recall, precision, where="post", label=name)
    ax.axhline(base, color="grey", linestyle=":", label=f"positive rate {base:.3f}")
    ax.set(xlabel="recall", ylabel="precision", title=title, xlim=(0, 1), ylim=(0, 1.02))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_confusion(
    path: Path, matrix: Sequence[Sequence[int]], labels: Sequence[str], title: str
) -> Path:
    plt = _plt()
    m = np.asarray(matrix)
    size = max(4.0, 0.45 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set(xlabel="predicted", ylabel="true", title=title)
    if len(labels) <= 20:
        for (i, j), v in np.ndenumerate(m):
            ax.text(
                j,
                i,
                str(v),
                ha="center",
                va="center",
                fontsize=6,
                color="white" if v > m.max() / 2 else "black",
            )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def environment() -> dict[str, Any]:
    # torch is heavy to import (seconds): only code that runs a model pays for it.
    import torch

    try:
        commit = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
            ).stdout.strip()
            or None
        )
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "git_commit": commit,
        "cuda": torch.cuda.is_available(),
    }


def write_report(folder: Path, kind: str, body: dict[str, Any]) -> Path:
    """`report.json` with what was run, on what data, and every metric, next to its plots."""
    plots = sorted(p.name for p in folder.glob("*.png"))
    return write_json(
        folder / "report.json", {"kind": kind, "environment": environment(), "plots": plots, **body}
    )
