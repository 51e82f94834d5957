"""The names of the metrics a task gets, known without computing any (and without NumPy).

:func:`composer.metrics.compute_metrics` returns exactly these keys for a task (a test holds
them equal), so ``validate`` can check ``training.monitor.metric`` and search objectives
before any data is read.
"""

from __future__ import annotations

from typing import Sequence

__all__ = ["task_metric_names", "metric_names", "class_names", "is_sims_range", "in_percent", "shown"]

MOSI_METRICS = ("mae", "corr", "acc2_haszero", "f1_haszero", "acc2_nonzero", "f1_nonzero", "acc5", "acc7")
SIMS_METRICS = ("mae", "corr", "sims_acc2", "sims_acc3", "sims_acc5")


def class_names(k: int, names: Sequence[str] | None) -> list[str]:
    """The names of ``k`` classes or outputs: as given, else ``0 .. k-1``."""
    return [str(n) for n in names] if names is not None else [str(i) for i in range(k)]


def is_sims_range(label_range: Sequence[float]) -> bool:
    """One-output regressions with labels within [-1, 1] use CH-SIMS' metrics, others CMU-MOSI's."""
    low, high = label_range
    return low >= -1.0 and high <= 1.0


def task_metric_names(task) -> list[str]:
    """The metric names of a ``TaskConfig`` (kind, outputs, classes, label_range), in report order."""
    names = class_names(task.outputs, task.classes)
    if task.kind == "classification":
        return ["acc", "f1_weighted"] + [f"{m}_{n}" for n in names for m in ("acc", "f1")]
    if task.kind == "multilabel":
        return [f"{m}_{n}" for n in names for m in ("acc", "f1")] + ["acc", "f1_weighted"]
    if task.outputs == 1:
        return list(SIMS_METRICS if is_sims_range(task.label_range) else MOSI_METRICS)
    return ["mae", "corr"] + [f"{m}_{n}" for n in names for m in ("mae", "corr", "acc")]


def metric_names(task, loss_terms: Sequence[str] = (), outputs: Sequence[str] = ()) -> list[str]:
    """What a run logs per split and may monitor: ``loss``, each loss term ``loss/<name>``, the
    task's metrics of the prediction, and of every other scored output ``<output>/<metric>``."""
    task_names = task_metric_names(task)
    others = [f"{o}/{m}" for o in outputs if o != "prediction" for m in task_names]
    return ["loss"] + [f"loss/{t}" for t in loss_terms] + task_names + others


def in_percent(metric: str) -> bool:
    """Whether printed tables show a metric in percent, as papers do: accuracies and F1 (their
    AUILC and means over rates too, ``auilc_acc7``, ``mean_f1_nonzero``). Files keep fractions."""
    base = metric.split("/")[-1].removeprefix("auilc_").removeprefix("mean_")
    return base.startswith(("acc", "f1", "sims_acc"))


def shown(metric: str, value: float) -> str:
    """A metric's value as printed tables show it: accuracies and F1 in percent (1 decimal), others 4 decimals."""
    return f"{value * 100:.1f}" if in_percent(metric) else f"{value:.4f}"
