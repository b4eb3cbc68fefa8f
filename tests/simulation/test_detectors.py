"""Overload detectors on hand-made histories with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from corral.consolidation.detectors import (
    IQR,
    LR,
    LRR,
    MAD,
    THR,
    detector_threshold,
    host_history,
    host_overloaded,
    iqr,
    lr_estimates,
    lr_prediction,
    lrr_estimates,
    mad,
    median,
    overloaded,
    percentile_sorted,
    trimmed_length,
)


def arr(*xs: float) -> np.ndarray:
    return np.array(xs, dtype=np.float64)


def test_trimmed_length_cuts_only_the_zero_tail() -> None:
    assert trimmed_length(arr(0.5, 0.0, 0.2, 0.0, 0.0), 5) == 3
    assert trimmed_length(arr(0.0, 0.0), 2) == 0
    assert trimmed_length(arr(0.1, 0.2), 2) == 2


def test_percentile_is_commons_math_legacy() -> None:
    s = arr(1, 2, 3, 4)
    assert percentile_sorted(s, 4, 50) == 2.5  # pos 2.5: between 2 and 3
    assert percentile_sorted(s, 4, 25) == 1.25  # pos 1.25
    assert percentile_sorted(s, 4, 10) == 1.0  # pos < 1: the minimum
    assert percentile_sorted(arr(7), 1, 50) == 7.0
    assert median(arr(3, 1, 2), 3) == 2.0


def test_iqr_uses_cloudsims_rounded_quartile_positions() -> None:
    data = np.arange(1.0, 13.0)  # 12 values: q1 = round(3.25) - 1 = 2 -> 3; q3 = round(9.75) - 1 = 9 -> 10
    assert iqr(data, 12) == 7.0


def test_iqr_half_values_round_up_like_java() -> None:
    # n = 5: 0.25 * 6 = 1.5 -> round 2 -> index 1; 0.75 * 6 = 4.5 -> round 5 -> index 4
    assert iqr(arr(10, 20, 30, 40, 50), 5) == 50.0 - 20.0


def test_mad() -> None:
    # median 3, deviations 2 1 0 1 2 -> median 1
    assert mad(arr(1, 2, 3, 4, 5), 5) == 1.0
    assert mad(arr(0.5, 0.5, 0.5), 3) == 0.0


def test_lr_is_ordinary_least_squares_on_1_to_n() -> None:
    y = arr(0.1, 0.3, 0.2, 0.5, 0.4, 0.6, 0.55, 0.7, 0.8, 0.75)
    a, b = lr_estimates(y, 10)
    slope, intercept = np.polyfit(np.arange(1, 11), y, 1)
    assert a == pytest.approx(intercept, abs=1e-12)
    assert b == pytest.approx(slope, abs=1e-12)
    assert math.isnan(lr_estimates(y, 2)[0])  # SimpleRegression needs 3 points


def test_lr_prediction_extrapolates_from_the_10_newest_values() -> None:
    # history newest first: a straight line rising 0.02 per interval, newest 0.80
    hist = np.array([0.80 - 0.02 * i for i in range(30)])
    # oldest-first y over x = 1..10 is 0.62, 0.64, ..., 0.80; one interval ahead (x = 11): 0.82
    assert lr_prediction(hist, 30, 1.0, 1.0, False) == pytest.approx(0.82)
    assert lr_prediction(hist, 30, 1.2, 1.0, False) == pytest.approx(0.984)
    assert math.isnan(lr_prediction(hist, 9, 1.2, 1.0, False))


def test_robust_lr_ignores_an_outlier_that_pulls_plain_lr() -> None:
    y = np.array([0.5] * 10)
    y[6] = 0.95  # one spike
    a, b = lrr_estimates(y, 10)
    _, pb = lr_estimates(y, 10)
    assert abs(b) < abs(pb) / 10
    assert a + 11 * b == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize(
    ("kind", "param", "req", "hist", "expected"),
    [
        (THR, 0.8, 0.81, [], True),
        (THR, 0.8, 0.80, [], False),
        # IQR with too little history: the fallback THR 0.7
        (IQR, 1.5, 0.71, [0.5] * 11, True),
        (IQR, 1.5, 0.69, [0.5] * 11, False),
        # IQR with history 0.1..1.2 (12 values): IQR = 1.0 - 0.3 = 0.7 -> threshold 1 - 1.5 * 0.7 < 0
        (IQR, 1.5, 0.05, [0.1 * i for i in range(1, 13)], True),
        # MAD of a flat history is 0 -> threshold 1
        (MAD, 2.5, 0.99, [0.6] * 12, False),
        (MAD, 2.5, 1.01, [0.6] * 12, True),
        # LR of a flat 0.9 history: 0.9 x 1.2 >= 1
        (LR, 1.2, 0.0, [0.9] * 10, True),
        (LR, 1.2, 0.0, [0.8] * 10, False),
        (LRR, 1.2, 0.0, [0.9] * 10, True),
        # LR with 9 values: the fallback THR 0.7 on the request
        (LR, 1.2, 0.75, [0.1] * 9, True),
    ],
)
def test_overloaded(kind: int, param: float, req: float, hist: list[float], expected: bool) -> None:
    h = np.zeros(30)
    h[: len(hist)] = hist
    n = trimmed_length(h, 30)
    assert overloaded(kind, param, 0.7, req * 1000.0, 1000.0, h, n, 1.0, False) is expected


def test_detector_threshold_for_reports() -> None:
    assert detector_threshold("thr", 0.8, [0.5]) == 0.8
    assert detector_threshold("mad", 2.5, [0.6] * 12) == 1.0
    assert math.isnan(detector_threshold("iqr", 1.5, [0.6] * 5))


def test_host_history_and_detector_with_a_candidate_guest() -> None:
    # host 0 (capacity 1000) holds guests 0 and 1; guest 2 is a candidate
    count = np.array([2], dtype=np.int64)
    members = np.array([[0, 1, 0]], dtype=np.int64)
    vm_hist = np.zeros((3, 30))
    vm_hist[:, :12] = [[0.5] * 12, [0.25] * 12, [0.5] * 12]
    vm_len = np.array([12, 12, 12], dtype=np.int64)
    mips = np.array([1000.0, 1000.0, 200.0])
    out = np.zeros(30)
    n = host_history(0, count, members, -1, vm_hist, vm_len, mips, 1000.0, out)
    assert n == 12 and out[0] == pytest.approx(0.75)
    n = host_history(0, count, members, 2, vm_hist, vm_len, mips, 1000.0, out)
    assert out[0] == pytest.approx(0.85)
    req = np.array([500.0, 250.0, 300.0])
    ram = np.array([870.0, 870.0, 613.0])
    cap = np.array([1000.0])
    mbps = np.array([62.5])
    # MAD of a flat history is 0: threshold 1; 750 MIPS fit, 1050 with the candidate do not
    assert not host_overloaded(0, -1, MAD, 2.5, 0.7, False, count, members, req, mips, ram, vm_hist, vm_len, cap,
                               mbps, 300.0, out)
    assert host_overloaded(0, 2, MAD, 2.5, 0.7, False, count, members, req, mips, ram, vm_hist, vm_len, cap, mbps,
                           300.0, out)
