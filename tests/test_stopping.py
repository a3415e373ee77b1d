import math

import pytest

from ganstop.stopping import EarlyStopper, StopReason


def feed(stopper: EarlyStopper, values, start: int = 1):
    """Feed values epoch by epoch; return the epoch and reason of the stop (or None)."""
    for epoch, value in enumerate(values, start=start):
        check = stopper.update(epoch, value)
        if check.stop:
            return epoch, check.stop
    return None


def test_patience_counts_checks_without_improvement():
    stopper = EarlyStopper(mode="min", patience=3)
    assert feed(stopper, [5, 4, 4.5, 4.2, 4.1]) == (5, StopReason.PATIENCE_EXHAUSTED)
    assert stopper.best == 4 and stopper.best_epoch == 2


def test_improvement_resets_patience():
    stopper = EarlyStopper(mode="min", patience=2)
    assert feed(stopper, [5, 6, 4, 6, 3, 7]) is None
    assert stopper.wait == 1 and stopper.best_epoch == 5


def test_mode_max():
    stopper = EarlyStopper(mode="max", patience=1)
    assert feed(stopper, [0.1, 0.5, 0.4]) == (3, StopReason.PATIENCE_EXHAUSTED)
    assert stopper.best == 0.5


def test_absolute_min_delta_needs_a_big_enough_gain_but_best_epoch_is_exact():
    stopper = EarlyStopper(mode="min", patience=2, min_delta=1.0)
    assert feed(stopper, [10, 9.5, 9.2]) == (3, StopReason.PATIENCE_EXHAUSTED)
    assert stopper.best_epoch == 3 and stopper.best == 9.2  # restored epoch = exact best


def test_relative_min_delta_scales_with_the_reference():
    stopper = EarlyStopper(mode="min", patience=2, min_delta=0.1, min_delta_mode="relative")
    assert feed(stopper, [100, 89, 81]) is None  # 11% resets patience, 9% does not
    assert stopper.wait == 1 and stopper.best == 81
    stopper = EarlyStopper(mode="min", patience=1, min_delta=0.1, min_delta_mode="relative")
    assert feed(stopper, [100, 95]) == (2, StopReason.PATIENCE_EXHAUSTED)  # 5% of 100 < 10


def test_cumulative_delta_lets_small_gains_add_up():
    values = [10, 9.6, 9.2, 8.8, 8.4]  # 0.4 per check, min_delta 0.5
    plain = EarlyStopper(mode="min", patience=3, min_delta=0.5)
    assert feed(plain, values) == (4, StopReason.PATIENCE_EXHAUSTED)
    cumulative = EarlyStopper(mode="min", patience=3, min_delta=0.5, cumulative_delta=True)
    assert feed(cumulative, values) is None  # 10 -> 9.2 and 9.2 -> 8.4 beat the unmoved reference
    assert cumulative.wait == 0


def test_warmup_blocks_stopping_and_patience_counting():
    stopper = EarlyStopper(mode="min", patience=1, warmup=4)
    assert feed(stopper, [5, 6, 7]) is None
    assert stopper.wait == 0
    assert stopper.update(4, 8).stop == StopReason.PATIENCE_EXHAUSTED


def test_warmup_still_stops_on_non_finite():
    stopper = EarlyStopper(mode="min", warmup=10)
    assert stopper.update(1, math.nan).stop == StopReason.NON_FINITE_METRIC


def test_baseline_must_be_beaten():
    stopper = EarlyStopper(mode="min", patience=2, baseline=1.0)
    assert feed(stopper, [3, 2, 1.5]) == (2, StopReason.PATIENCE_EXHAUSTED)
    assert stopper.best == 2  # best still tracked for the checkpoint
    stopper = EarlyStopper(mode="min", patience=2, baseline=1.0)
    assert feed(stopper, [0.9, 0.8]) is None


def test_stopping_threshold():
    stopper = EarlyStopper(mode="max", patience=100, stopping_threshold=0.9)
    assert feed(stopper, [0.5, 0.8, 0.95]) == (3, StopReason.STOPPING_THRESHOLD)


def test_divergence_threshold():
    stopper = EarlyStopper(mode="min", patience=100, divergence_threshold=50)
    assert feed(stopper, [20, 10, 60]) == (3, StopReason.DIVERGENCE_THRESHOLD)
    assert stopper.best_epoch == 2


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_metric(value):
    stopper = EarlyStopper(mode="min")
    stopper.update(1, 3.0)
    check = stopper.update(2, value)
    assert check.stop == StopReason.NON_FINITE_METRIC and not check.is_best
    assert stopper.best == 3.0


def test_check_finite_off_ignores_nan():
    stopper = EarlyStopper(mode="min", check_finite=False, patience=5)
    assert stopper.update(1, math.nan).stop is None
    assert stopper.best is None


def test_non_finite_loss():
    stopper = EarlyStopper()
    assert stopper.update_losses(1, {"d_loss": 0.5, "g_loss": 1.0}) is None
    assert stopper.update_losses(2, {"d_loss": math.nan, "g_loss": 1.0}) == StopReason.NON_FINITE_LOSS
    assert stopper.stopped_epoch == 2


def test_max_epochs():
    stopper = EarlyStopper(patience=10)
    feed(stopper, [3, 2, 1])
    assert stopper.exhaust(3) == StopReason.MAX_EPOCHS and stopper.stopped_epoch == 3


def test_updates_after_a_stop_are_refused():
    stopper = EarlyStopper(patience=0)
    feed(stopper, [1, 2])
    with pytest.raises(RuntimeError):
        stopper.update(3, 0.5)


def test_state_dict_round_trip_continues_identically():
    values = [10, 9, 9.5, 8.9, 9.1, 9.2, 9.3]
    reference = EarlyStopper(mode="min", patience=3, min_delta=0.2, cumulative_delta=True)
    expected = feed(reference, values)
    first = EarlyStopper(mode="min", patience=3, min_delta=0.2, cumulative_delta=True)
    assert feed(first, values[:3]) is None
    second = EarlyStopper(mode="min", patience=3, min_delta=0.2, cumulative_delta=True)
    second.load_state_dict(first.state_dict())
    assert feed(second, values[3:], start=4) == expected
    assert second.state_dict() == reference.state_dict()


@pytest.mark.parametrize("kwargs", [{"mode": "up"}, {"patience": -1}, {"min_delta_mode": "percent"}])
def test_bad_options_are_rejected(kwargs):
    with pytest.raises(ValueError):
        EarlyStopper(**kwargs)
