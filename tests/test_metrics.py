"""Metrics against hand-computed values."""

import math

import numpy as np
import pytest

from composer.blueprint.schema import TaskConfig
from composer.metrics import (
    acc2_haszero,
    acc2_nonzero,
    acc_multiclass,
    auilc,
    classification_metrics,
    compute_metrics,
    f1_haszero,
    f1_nonzero,
    f1_weighted,
    mae,
    metric_direction,
    multilabel_metrics,
    pearson_corr,
    sims_accuracy,
)

PRED = np.array([1.2, -0.4, 0.0, 2.6, -2.5, 0.3])
LABEL = np.array([1.0, 0.0, -0.6, 3.0, -1.4, -0.2])


def test_mae_is_mean_absolute_difference():
    # |0.2| + |0.4| + |0.6| + |0.4| + |1.1| + |0.5| = 3.2
    assert mae(PRED, LABEL) == pytest.approx(3.2 / 6)


def test_pearson_corr_matches_hand_value_and_constant_is_zero():
    assert pearson_corr([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / math.sqrt(2 * 114 / 9))  # centred x [-1,0,1], y [-7/3,-1/3,8/3]
    assert pearson_corr([1, 1, 1], [1, 2, 3]) == 0.0


def test_acc2_haszero_counts_zero_label_as_non_negative():
    # pred >= 0: T F T T F T ; label >= 0: T T F T F F -> agree at 0, 3, 4 -> 3/6
    assert acc2_haszero(PRED, LABEL) == pytest.approx(0.5)


def test_acc2_nonzero_drops_zero_labels():
    # keep 0, 2, 3, 4, 5; pred > 0: T F T F T ; label > 0: T F T F F -> 4/5
    assert acc2_nonzero(PRED, LABEL) == pytest.approx(0.8)


def test_f1_weighted_by_hand():
    # classes: true [1,1,0,0,0], pred [1,0,0,0,1]
    # class 1: tp 1, fp 1, fn 1 -> F1 0.5 (support 2); class 0: tp 2, fp 1, fn 1 -> 2/3 (support 3)
    assert f1_weighted([1, 0, 0, 0, 1], [1, 1, 0, 0, 0]) == pytest.approx((0.5 * 2 + 2 / 3 * 3) / 5)


def test_f1_haszero_and_nonzero_use_their_decisions():
    # has-zero decisions: pred [T F T T F T], label [T T F T F F]
    # True: tp 2 fp 2 fn 1 -> 4/7 (support 3); False: tp 1 fp 1 fn 2 -> 2/5 (support 3)
    assert f1_haszero(PRED, LABEL) == pytest.approx((4 / 7 * 3 + 2 / 5 * 3) / 6)
    # non-zero: pred [T F T F T], label [T F T F F]: True tp 2 fp 1 -> 0.8 (2); False tp 2 fn 1 -> 0.8 (3)
    assert f1_nonzero(PRED, LABEL) == pytest.approx(0.8)


def test_acc7_and_acc5_clip_then_round_half_to_even():
    # acc7: pred -> [1, -0, 0, 3, -2, 0], label -> [1, 0, -1, 3, -1, -0] -> agree 0, 1, 3, 5
    assert acc_multiclass(PRED, LABEL, 3) == pytest.approx(4 / 6)
    # acc5 clips to [-2, 2]: pred [1, -0, 0, 2, -2, 0], label [1, 0, -1, 2, -1, -0]
    assert acc_multiclass(PRED, LABEL, 2) == pytest.approx(4 / 6)
    assert acc_multiclass([0.5, 2.5], [0.0, 2.0], 3) == 1.0  # numpy rounding: 0.5 -> 0, 2.5 -> 2


def test_sims_accuracies_use_release_bin_edges():
    pred = np.array([-0.8, -0.05, 0.05, 0.5, 1.3])
    label = np.array([-0.6, -0.2, 0.0, 0.8, 0.9])
    # acc2 edges (-1.01, 0, 1.01]: pred [0 0 1 1 1], label [0 0 0 1 1] -> 4/5
    assert sims_accuracy(pred, label, 2) == pytest.approx(0.8)
    # acc3 edges -0.1, 0.1: pred [0 1 1 2 2], label [0 0 1 2 2] -> 4/5
    assert sims_accuracy(pred, label, 3) == pytest.approx(0.8)
    # acc5 edges -0.7, -0.1, 0.1, 0.7: pred [0 2 2 3 4], label [1 1 2 4 4] -> 2/5
    assert sims_accuracy(pred, label, 5) == pytest.approx(0.4)


def test_classification_metrics_with_one_vs_rest_per_class():
    logits = np.array([[2, 0, 0], [0, 3, 0], [0, 0, 1], [1, 0, 0]], dtype=float)  # argmax 0 1 2 0
    label = np.array([0, 1, 1, 2])
    m = classification_metrics(logits, label, ["neg", "neu", "pos"])
    assert m["acc"] == pytest.approx(0.5)
    # class 'pos' vs rest: pred [F F T F], true [F F F T] -> acc 0.5
    assert m["acc_pos"] == pytest.approx(0.5)
    assert m["acc_neg"] == pytest.approx(0.75)


def test_multilabel_metrics_per_label_and_mean():
    logits = np.array([[1.0, -1.0], [-1.0, -1.0], [2.0, 1.0], [-0.5, 0.3]])
    label = np.array([[1, 0], [0, 0], [1, 0], [1, 1]])
    m = multilabel_metrics(logits, label, ["happy", "sad"])
    assert m["acc_happy"] == pytest.approx(0.75)
    assert m["acc_sad"] == pytest.approx(0.75)
    assert m["acc"] == pytest.approx(0.75)


def test_compute_metrics_picks_the_set_for_the_task():
    assert "acc7" in compute_metrics(TaskConfig(), PRED, LABEL)
    sims = compute_metrics(TaskConfig(label_range=(-1.0, 1.0)), PRED / 3, LABEL / 3)
    assert "sims_acc5" in sims and "acc7" not in sims
    cls = compute_metrics(TaskConfig(kind="classification", outputs=2), np.eye(2)[[0, 1]], np.array([0, 0]))
    assert cls["acc"] == 0.5


def test_auilc_is_trapezoid_area():
    assert auilc([0.0, 0.5, 1.0], [1.0, 0.5, 0.0]) == pytest.approx(0.5)
    assert auilc([0.1, 0.2], [0.8, 0.6]) == pytest.approx(0.07)


def test_metric_direction():
    assert metric_direction("mae") == "minimize"
    assert metric_direction("loss") == "minimize"
    assert metric_direction("acc2_nonzero") == "maximize"


def test_several_regression_outputs_report_per_output_metrics_with_rounded_accuracy():
    import numpy as np

    from composer.metrics import multi_regression_metrics

    pred = np.array([[1.2, 6.6], [3.4, 2.2], [5.0, 7.9]])
    label = np.array([[1.0, 7.0], [4.0, 2.0], [5.0, 7.0]])
    out = multi_regression_metrics(pred, label, (1.0, 7.0), ["con", "hum"])
    assert out["acc_con"] == 2 / 3 and out["acc_hum"] == 1.0  # 3.4 -> 3 vs 4; 7.9 clipped to 7
    assert out["mae_con"] == np.mean(np.abs(pred[:, 0] - label[:, 0]))
    assert set(out) == {"mae", "corr", "mae_con", "corr_con", "acc_con", "mae_hum", "corr_hum", "acc_hum"}
