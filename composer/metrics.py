"""Evaluation metrics with the field's exact definitions, named so a reader knows which is meant.

Regression on sentiment intensity (CMU-MOSI / CMU-MOSEI, labels in [-3, 3]):

=================  =====================================================================
``mae``            mean |ŷ - y|
``corr``           Pearson correlation between ŷ and y
``acc2_haszero``   binary accuracy, *negative vs non-negative*: ``ŷ >= 0`` vs ``y >= 0`` on all samples
``f1_haszero``     weighted F1 of the same decision
``acc2_nonzero``   binary accuracy, *negative vs positive*: samples with ``y == 0`` dropped, ``ŷ > 0`` vs ``y > 0``
``f1_nonzero``     weighted F1 of the same decision
``acc5``           five-class accuracy: ``round(clip(·, -2, 2))`` of prediction and label
``acc7``           seven-class accuracy: ``round(clip(·, -3, 3))`` of prediction and label
=================  =====================================================================

Rounding is NumPy's (half to even), as in the reference implementations.

CH-SIMS style (labels in [-1, 1]), by the bin edges of the SIMS release, a value falling in
``(edge[i], edge[i+1]]``: ``sims_acc2`` (edges -1.01, 0, 1.01), ``sims_acc3`` (-1.01, -0.1,
0.1, 1.01), ``sims_acc5`` (-1.01, -0.7, -0.1, 0.1, 0.7, 1.01), after clipping to [-1, 1].

Classification: ``acc`` and ``f1_weighted`` (support-weighted F1 over classes), plus one-vs-rest
per class ``acc_<class>`` / ``f1_<class>`` (IEMOCAP style: the binary decision "is it this
class", weighted F1 over the two outcomes). Multilabel (one logit per label, positive when
> 0): per label ``acc_<label>`` / ``f1_<label>`` and their means ``acc`` / ``f1_weighted``.

All functions take NumPy arrays (or anything ``np.asarray`` accepts) and return floats in
[0, 1] for accuracies and F1 (not percentages).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from composer.metric_names import class_names as _class_names, is_sims_range

__all__ = [
    "mae",
    "pearson_corr",
    "accuracy",
    "f1_weighted",
    "acc2_haszero",
    "f1_haszero",
    "acc2_nonzero",
    "f1_nonzero",
    "acc_multiclass",
    "sims_accuracy",
    "regression_metrics",
    "classification_metrics",
    "multilabel_metrics",
    "compute_metrics",
    "metric_direction",
    "auilc",
    "SIMS_EDGES",
]

SIMS_EDGES = {
    2: (-1.01, 0.0, 1.01),
    3: (-1.01, -0.1, 0.1, 1.01),
    5: (-1.01, -0.7, -0.1, 0.1, 0.7, 1.01),
}

_MINIMIZE = {"loss", "mae", "mse"}


def metric_direction(name: str) -> str:
    """``"minimize"`` for losses and errors (``loss``, a loss term ``loss/<name>``, ``mae``,
    ``*_loss``), else ``"maximize"``."""
    if name.startswith("loss/"):
        return "minimize"
    base = name.split("/")[-1]
    return "minimize" if base in _MINIMIZE or base.endswith("_loss") else "maximize"


def _flat(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def mae(pred, label) -> float:
    """Mean absolute error."""
    return float(np.mean(np.abs(_flat(pred) - _flat(label))))


def pearson_corr(pred, label) -> float:
    """Pearson correlation coefficient; 0.0 when either side is constant (undefined)."""
    p, y = _flat(pred), _flat(label)
    p, y = p - p.mean(), y - y.mean()
    denom = np.sqrt((p * p).sum() * (y * y).sum())
    return float((p * y).sum() / denom) if denom > 0 else 0.0


def accuracy(pred_classes, true_classes) -> float:
    """Fraction of equal entries."""
    p, y = np.asarray(pred_classes).reshape(-1), np.asarray(true_classes).reshape(-1)
    return float(np.mean(p == y)) if y.size else 0.0


def f1_weighted(pred_classes, true_classes) -> float:
    """F1 per class present in the labels, averaged with weights = class support.

    Same as scikit-learn's ``f1_score(average="weighted")``: a class that never occurs in the
    labels has weight 0; a class never predicted has F1 0.
    """
    p, y = np.asarray(pred_classes).reshape(-1), np.asarray(true_classes).reshape(-1)
    if y.size == 0:
        return 0.0
    total = 0.0
    for c in np.unique(y):
        tp = np.sum((p == c) & (y == c))
        fp = np.sum((p == c) & (y != c))
        fn = np.sum((p != c) & (y == c))
        f1 = 2 * tp / (2 * tp + fp + fn) if tp > 0 else 0.0
        total += f1 * np.sum(y == c)
    return float(total / y.size)


def acc2_haszero(pred, label) -> float:
    """Negative vs non-negative: ``pred >= 0`` against ``label >= 0`` over all samples."""
    return accuracy(_flat(pred) >= 0, _flat(label) >= 0)


def f1_haszero(pred, label) -> float:
    """Weighted F1 of negative vs non-negative."""
    return f1_weighted(_flat(pred) >= 0, _flat(label) >= 0)


def _nonzero(pred, label) -> tuple[np.ndarray, np.ndarray]:
    p, y = _flat(pred), _flat(label)
    keep = y != 0
    return p[keep] > 0, y[keep] > 0


def acc2_nonzero(pred, label) -> float:
    """Negative vs positive: samples with label 0 dropped, ``pred > 0`` against ``label > 0``."""
    return accuracy(*_nonzero(pred, label))


def f1_nonzero(pred, label) -> float:
    """Weighted F1 of negative vs positive (zero labels dropped)."""
    return f1_weighted(*_nonzero(pred, label))


def acc_multiclass(pred, label, bound: int) -> float:
    """Accuracy after ``round(clip(x, -bound, bound))`` of both sides (bound 3: Acc-7, 2: Acc-5)."""
    p = np.round(np.clip(_flat(pred), -bound, bound))
    y = np.round(np.clip(_flat(label), -bound, bound))
    return accuracy(p, y)


def _sims_classes(x: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    x = np.clip(x, -1.0, 1.0)
    out = np.zeros(x.shape, dtype=np.int64)
    for i in range(len(edges) - 1):
        out[(x > edges[i]) & (x <= edges[i + 1])] = i
    return out


def sims_accuracy(pred, label, classes: int) -> float:
    """CH-SIMS Acc-2/3/5 with the release's bin edges (:data:`SIMS_EDGES`)."""
    edges = SIMS_EDGES[classes]
    return accuracy(_sims_classes(_flat(pred), edges), _sims_classes(_flat(label), edges))


def regression_metrics(pred, label, *, style: str = "mosi") -> dict[str, float]:
    """All sentiment-regression metrics. ``style``: ``mosi`` (labels in [-3, 3]) or ``sims`` ([-1, 1])."""
    pred, label = _flat(pred), _flat(label)
    out = {"mae": mae(pred, label), "corr": pearson_corr(pred, label)}
    if style == "sims":
        out.update({f"sims_acc{k}": sims_accuracy(pred, label, k) for k in (2, 3, 5)})
        return out
    out.update(
        {
            "acc2_haszero": acc2_haszero(pred, label),
            "f1_haszero": f1_haszero(pred, label),
            "acc2_nonzero": acc2_nonzero(pred, label),
            "f1_nonzero": f1_nonzero(pred, label),
            "acc5": acc_multiclass(pred, label, 2),
            "acc7": acc_multiclass(pred, label, 3),
        }
    )
    return out


def classification_metrics(logits, label, class_names: Sequence[str] | None = None) -> dict[str, float]:
    """``acc``, ``f1_weighted`` and one-vs-rest ``acc_<class>`` / ``f1_<class>`` from logits ``(N, C)``."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(label).reshape(-1).astype(np.int64)
    pred = logits.argmax(axis=-1).reshape(-1)
    out = {"acc": accuracy(pred, y), "f1_weighted": f1_weighted(pred, y)}
    for c, name in enumerate(_class_names(logits.shape[-1], class_names)):
        out[f"acc_{name}"] = accuracy(pred == c, y == c)
        out[f"f1_{name}"] = f1_weighted(pred == c, y == c)
    return out


def multilabel_metrics(logits, label, class_names: Sequence[str] | None = None) -> dict[str, float]:
    """Per-label accuracy and weighted F1 (positive when logit > 0) and their means."""
    logits = np.asarray(logits, dtype=np.float64)
    y = np.asarray(label).reshape(logits.shape) > 0.5
    pred = logits > 0
    out: dict[str, float] = {}
    accs, f1s = [], []
    for k, name in enumerate(_class_names(logits.shape[-1], class_names)):
        accs.append(accuracy(pred[:, k], y[:, k]))
        f1s.append(f1_weighted(pred[:, k], y[:, k]))
        out[f"acc_{name}"], out[f"f1_{name}"] = accs[-1], f1s[-1]
    out["acc"], out["f1_weighted"] = float(np.mean(accs)), float(np.mean(f1s))
    return out


def compute_metrics(task, pred, label) -> dict[str, float]:
    """Metrics for a blueprint's ``task`` (a ``TaskConfig``) from predictions and labels.

    Regression with one output and ``label_range`` within [-1, 1] uses the SIMS set; other
    one-output regressions the MOSI set; several regression outputs (e.g. POM's speaker traits)
    report ``mae`` and ``corr`` over all entries and, per output (named by ``task.classes``),
    ``mae_<name>``, ``corr_<name>`` and ``acc_<name>``: the accuracy of predictions and labels
    rounded to the integers of ``label_range`` (POM's A7 on a 1..7 scale).
    """
    pred = np.asarray(pred, dtype=np.float64)
    if task.kind == "classification":
        return classification_metrics(pred.reshape(-1, task.outputs), label, task.classes)
    if task.kind == "multilabel":
        return multilabel_metrics(pred.reshape(-1, task.outputs), label, task.classes)
    if task.outputs == 1:
        return regression_metrics(pred, label, style="sims" if is_sims_range(task.label_range) else "mosi")
    return multi_regression_metrics(pred.reshape(-1, task.outputs), label, task.label_range, task.classes)


def multi_regression_metrics(pred, label, label_range, names: Sequence[str] | None = None) -> dict[str, float]:
    """``mae``/``corr`` over all entries, and per output ``mae_<name>``, ``corr_<name>``, ``acc_<name>``."""
    pred = np.asarray(pred, dtype=np.float64)
    y = np.asarray(label, dtype=np.float64).reshape(pred.shape)
    low, high = label_range
    out = {"mae": mae(pred, y), "corr": pearson_corr(pred, y)}
    for k, name in enumerate(_class_names(pred.shape[-1], names)):
        out[f"mae_{name}"] = mae(pred[:, k], y[:, k])
        out[f"corr_{name}"] = pearson_corr(pred[:, k], y[:, k])
        levels = lambda v: np.clip(np.round(v), np.ceil(low), np.floor(high))  # noqa: E731
        out[f"acc_{name}"] = accuracy(levels(pred[:, k]), levels(y[:, k]))
    return out


def auilc(rates: Sequence[float], values: Sequence[float]) -> float:
    """Area under the indicator line chart (EMT-DLFR eq. 17): trapezoid rule over the rates."""
    r, v = np.asarray(rates, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if r.size != v.size:
        raise ValueError(f"{r.size} rates but {v.size} values")
    return float(np.sum(0.5 * (v[1:] + v[:-1]) * (r[1:] - r[:-1])))
