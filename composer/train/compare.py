"""Paired comparisons of two models' predictions on the same samples (NumPy only, no torch).

Both models predicted the same ``N`` samples with the same labels, so every statistic pairs
them sample by sample. For each metric ``m`` (a ``score(pred, label) -> {metric: value}``
function, e.g. :func:`composer.metrics.compute_metrics` of the task):

* the **difference** is ``m(B) - m(A)`` (run B minus run A) on all samples;
* its **confidence interval** comes from a paired bootstrap: ``resamples`` draws of ``N``
  sample indices with replacement, the same indices for both runs, ``m(B) - m(A)`` on each
  draw, and the percentile interval at ``level`` (95 %: the 2.5th and 97.5th percentiles);
* its **p-value** comes from a paired permutation test of "A and B are exchangeable": in each
  of ``resamples`` rounds every sample's two predictions are swapped with probability 1/2 and
  the difference recomputed; ``p = (count + 1) / (rounds + 1)`` where ``count`` is the number
  of rounds whose ``|difference|`` reaches the observed one (two-sided).

Both draw from NumPy generators seeded by ``seed`` (one stream each, from
``SeedSequence(seed).spawn(2)``), so the same inputs and seed give the same numbers.
Identical predictions give difference 0, interval [0, 0] and p = 1.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np

from composer.errors import ComposerError
from composer.metrics import metric_direction

__all__ = ["MetricComparison", "Comparison", "compare_predictions", "bootstrap_differences", "permutation_differences", "print_comparison"]

#: ``score(pred, label) -> {metric: value}``; ``pred`` ``(N, ...)``, ``label`` ``(N, ...)``.
Score = Callable[[np.ndarray, np.ndarray], dict[str, float]]


@dataclass(frozen=True)
class MetricComparison:
    """One metric of runs A and B on the same samples, and the paired statistics of ``b - a``."""

    a: float
    b: float
    difference: float  # b - a
    ci_low: float
    ci_high: float
    p_value: float
    direction: str  # "minimize" or "maximize" (composer.metrics.metric_direction)

    @property
    def better(self) -> str:
        """``"A"``, ``"B"`` or ``"-"`` (equal), by the metric's direction."""
        if self.difference == 0:
            return "-"
        return "B" if (self.difference > 0) == (self.direction == "maximize") else "A"


@dataclass
class Comparison:
    """What ``composer compare`` reports: the runs, the data and split, and one
    :class:`MetricComparison` per metric; ``written`` is the JSON file, once written."""

    a: str
    b: str
    split: str
    samples: int
    resamples: int
    seed: int
    level: float
    metrics: dict[str, MetricComparison]
    data: dict[str, Any] | None = None
    written: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "a": self.a, "b": self.b, "data": self.data, "split": self.split, "samples": self.samples,
            "difference": "b - a", "resamples": self.resamples, "seed": self.seed, "level": self.level,
            "bootstrap": "paired, percentile interval", "permutation": "paired swaps with probability 1/2, two-sided, (count + 1) / (rounds + 1)",
            "metrics": {name: {**asdict(m), "better": m.better} for name, m in self.metrics.items()},
        }


def _check(a: np.ndarray, b: np.ndarray, label: np.ndarray) -> None:
    if a.shape != b.shape:
        raise ComposerError(f"the two runs' predictions differ in shape: {a.shape} and {b.shape}")
    if a.shape[:1] != label.shape[:1]:
        raise ComposerError(f"{a.shape[0]} predictions for {label.shape[0]} labels")
    if a.shape[0] == 0:
        raise ComposerError("no samples to compare")


def bootstrap_differences(score: Score, a: np.ndarray, b: np.ndarray, label: np.ndarray, resamples: int,
                          rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``{metric: (resamples,)}``: ``m(B) - m(A)`` on each paired resample of the N samples."""
    n, out = label.shape[0], {}
    for _ in range(resamples):
        idx = rng.integers(0, n, size=n)
        sa, sb = score(a[idx], label[idx]), score(b[idx], label[idx])
        for k, v in sa.items():
            out.setdefault(k, []).append(sb[k] - v)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def permutation_differences(score: Score, a: np.ndarray, b: np.ndarray, label: np.ndarray, rounds: int,
                            rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``{metric: (rounds,)}``: ``m(B') - m(A')`` where each sample's two predictions were
    swapped with probability 1/2 (``a``, ``b``: ``(N, ...)``)."""
    n, out = label.shape[0], {}
    for _ in range(rounds):
        swap = (rng.random(n) < 0.5).reshape((n,) + (1,) * (a.ndim - 1))  # (N, 1, ...) broadcasts over a sample's entries
        pa, pb = np.where(swap, b, a), np.where(swap, a, b)
        sa, sb = score(pa, label), score(pb, label)
        for k, v in sa.items():
            out.setdefault(k, []).append(sb[k] - v)
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def compare_predictions(score: Score, a, b, label, *, resamples: int = 1000, seed: int = 0,
                        level: float = 0.95) -> dict[str, MetricComparison]:
    """Every metric ``score`` reports, of A and B, with the difference ``b - a``, its paired
    bootstrap interval at ``level`` and its paired permutation p-value (module docstring).

    ``a``, ``b``: predictions ``(N, ...)`` of the same samples; ``label``: ``(N, ...)``."""
    a, b, label = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), np.asarray(label)
    _check(a, b, label)
    if resamples < 1:
        raise ComposerError(f"--resamples {resamples}: expected at least 1")
    if not 0 < level < 1:
        raise ComposerError(f"confidence level {level}: expected a number between 0 and 1")
    boot_rng, perm_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    boot = bootstrap_differences(score, a, b, label, resamples, boot_rng)
    perm = permutation_differences(score, a, b, label, resamples, perm_rng)
    sa, sb = score(a, label), score(b, label)
    tail = (1 - level) / 2
    out = {}
    for name in sa:
        observed = sb[name] - sa[name]
        low, high = np.quantile(boot[name], [tail, 1 - tail])
        reach = np.abs(perm[name]) >= abs(observed) - 1e-12 * max(1.0, abs(observed))  # ties count (float noise included)
        p = (int(reach.sum()) + 1) / (resamples + 1)
        out[name] = MetricComparison(float(sa[name]), float(sb[name]), float(observed), float(low), float(high), float(p),
                                     metric_direction(name))
    return out


def print_comparison(result: Comparison, console=None, title: str | None = None) -> None:
    """One row per metric: A, B, B - A, the interval, p and which run is better."""
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text  # cells and paths are shown as they are, never read as markup

    console = console or Console(highlight=False)
    pct = f"{100 * result.level:g}%"
    table = Table(title=Text(title or f"B - A on {result.split} ({result.samples} samples; {result.resamples} resamples, seed {result.seed})"))
    for col in ("metric", "A", "B", "B - A", f"{pct} CI", "p", "better"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, m in result.metrics.items():
        cells = (name, f"{m.a:.4f}", f"{m.b:.4f}", f"{m.difference:+.4f}", f"[{m.ci_low:+.4f}, {m.ci_high:+.4f}]", f"{m.p_value:.4f}", m.better)
        table.add_row(*map(Text, cells))
    console.print(table)
    console.print(Text(f"A: {result.a}\nB: {result.b}"))
