import math
import random

import pytest

from ganstop import recipe as rc
from ganstop.stopping.stopper import AUTO_DELTA_SE, Check, EarlyStopper
from ganstop.stopping.criteria import StopReason


def feed(stopper: EarlyStopper, values, start: int = 1):
    """Feed values epoch by epoch; return the epoch and reason of the stop (or None)."""
    for epoch, value in enumerate(values, start=start):
        check = stopper.update(epoch, value)
        if check.stop:
            return epoch, check.stop
    return None


def test_patience_counts_epochs_without_improvement():
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


def test_the_reference_moves_only_on_a_real_gain_by_default():
    values = [10, 9.6, 9.2, 8.8, 8.4]  # 0.4 per check, min_delta 0.5: the gains add up (Keras, Lightning)
    keras = EarlyStopper(mode="min", patience=3, min_delta=0.5)
    assert feed(keras, values) is None  # 10 -> 9.2 and 9.2 -> 8.4 beat the unmoved reference
    assert keras.wait == 0
    ignite = EarlyStopper(mode="min", patience=3, min_delta=0.5, delta_reference="best")
    assert feed(ignite, values) == (4, StopReason.PATIENCE_EXHAUSTED)  # every small gain moved the bar


def test_a_smooth_curve_that_keeps_improving_does_not_stop():
    curve = [16 + 40 * math.exp(-epoch / 40) for epoch in range(1, 121)]  # the digits FID shape
    for options in ({"min_delta": 0.02, "min_delta_mode": "relative"}, {"min_delta": 0.3},
                    {"criteria": ["trend"], "min_delta": 0.02, "min_delta_mode": "relative"}):
        stopper = EarlyStopper(mode="min", patience=8, warmup=10, **options)
        assert feed(stopper, curve) is None, options
        assert stopper.best == curve[-1]
    moving_bar = EarlyStopper(mode="min", patience=8, warmup=10, min_delta=0.02, min_delta_mode="relative",
                              delta_reference="best")
    assert feed(moving_bar, curve)[0] < 30  # the behaviour that used to be the default


def test_a_flat_noisy_curve_stops():
    rng = random.Random(7)
    noisy = [20 + rng.gauss(0, 0.5) for _ in range(200)]
    for options in ({"min_delta": 0.02, "min_delta_mode": "relative"}, {"criteria": ["trend"], "min_delta": 0.1},
                    {"min_delta": 2, "min_delta_mode": "se"}):
        stopper = EarlyStopper(mode="min", patience=8, warmup=5, **options)
        for epoch, value in enumerate(noisy, start=1):
            if stopper.update(epoch, value, se=0.5).stop:
                break
        assert stopper.stopped and stopper.stopped_epoch < 60, options


def test_se_mode_counts_a_gain_only_above_the_noise():
    quiet = EarlyStopper(mode="min", patience=2, min_delta=2, min_delta_mode="se")
    for epoch, value in enumerate([10, 9, 8], start=1):
        assert quiet.update(epoch, value, se=0.1).improved  # 1.0 > 2 * hypot(0.1, 0.1)
    loud = EarlyStopper(mode="min", patience=2, min_delta=2, min_delta_mode="se")
    loud.update(1, 10, se=1.0)
    assert not loud.update(2, 9, se=1.0).improved and not loud.update(3, 8, se=1.0).improved
    assert loud.stop_reason == StopReason.PATIENCE_EXHAUSTED and loud.best == 8  # best is still exact
    with pytest.raises(ValueError, match="standard error"):
        loud_without_se = EarlyStopper(mode="min", min_delta=2, min_delta_mode="se")
        loud_without_se.update(1, 10)
        loud_without_se.update(2, 9)


def test_from_config_reads_auto_as_standard_errors():
    config = rc.load(None, [("stopping.min_delta", "auto"), ("stopping.criteria", ["patience", "trend"]),
                            ("stopping.combine", "all"), ("stopping.window", 4), ("stopping.patience_increase", 2)]).stopping
    stopper = EarlyStopper.from_config(config, "max")
    assert (stopper.min_delta, stopper.min_delta_mode) == (AUTO_DELTA_SE, "se")
    assert stopper.mode == "max" and stopper.criteria == ("patience", "trend") and stopper.window == 4
    assert stopper.patience_increase == 2.0


def test_trend_stops_when_the_projected_gain_is_below_min_delta():
    slowing = [10 - 0.5 * e for e in range(1, 11)] + [5 - 0.01 * e for e in range(1, 30)]
    stopper = EarlyStopper(mode="min", patience=5, min_delta=0.2, criteria=["trend"], window=5)
    epoch, reason = feed(stopper, slowing)
    assert reason == StopReason.TREND_FLAT and 12 <= epoch <= 15  # 5 checks x 0.01 < 0.2 once the window is flat
    rising = EarlyStopper(mode="max", patience=5, min_delta=0.2, criteria=["trend"], window=5)
    assert feed(rising, [0.1 * e for e in range(40)]) is None


def test_trend_projects_over_patience_epochs_when_checks_are_spaced():
    falling = [(epoch, 10 - 0.15 * epoch, None) for epoch in range(5, 61, 5)]  # 0.15 per epoch, a check every 5
    patient = EarlyStopper(mode="min", patience=10, min_delta=1.0, criteria=["trend"], window=15)
    assert patient.replay(falling, last_epoch=60).stop_reason == StopReason.MAX_EPOCHS  # 10 epochs project 1.5 > 1
    hasty = EarlyStopper(mode="min", patience=5, min_delta=1.0, criteria=["trend"], window=15)
    assert hasty.replay(falling, last_epoch=60).stopped_epoch == 20  # 5 epochs project 0.75; 15 epochs seen at 20


def test_patience_counts_epochs_so_spacing_checks_does_not_move_the_stop():
    curve = [10 / e for e in range(1, 21)] + [0.5] * 60  # improves to epoch 20, then flat
    stops = {}
    for every in (1, 2, 5, 10):
        checks = [(e, curve[e - 1], None) for e in range(every, len(curve) + 1, every)]
        stopper = EarlyStopper(mode="min", patience=20, min_delta=0.01).replay(checks, last_epoch=len(curve))
        stops[every] = (stopper.stopped_epoch, stopper.best_epoch)
    assert stops == {1: (40, 20), 2: (40, 20), 5: (40, 20), 10: (40, 20)}


def test_generalization_loss_stops_on_degradation_from_the_best():
    stopper = EarlyStopper(mode="min", criteria=["gl"], gl_alpha=10)
    assert feed(stopper, [10, 8, 8.5, 8.7, 9.0]) == (5, StopReason.GENERALIZATION_LOSS)  # 12.5% > 10%
    upward = EarlyStopper(mode="max", criteria=["gl"], gl_alpha=10)
    assert feed(upward, [0.5, 0.9, 0.85, 0.8]) == (4, StopReason.GENERALIZATION_LOSS)  # 11% below the best


def test_progress_quotient_weighs_the_loss_against_recent_progress():
    still_moving = EarlyStopper(mode="min", criteria=["pq"], strip=3, pq_alpha=0.75)
    assert feed(still_moving, [10, 5, 2.5, 2.6]) is None  # GL 4% over a strip whose mean is 60% above its best
    stalled = EarlyStopper(mode="min", criteria=["pq"], strip=3, pq_alpha=0.75)
    assert feed(stalled, [10, 5, 5, 5, 5, 6]) == (6, StopReason.PROGRESS_QUOTIENT)


def test_up_stops_after_successive_worse_strips():
    stopper = EarlyStopper(mode="min", criteria=["up"], strip=2, up_strips=2)
    assert feed(stopper, [5, 4, 3, 3.5, 4, 3.9, 4.5]) == (7, StopReason.SUCCESSIVE_WORSENING)  # 3 < 4 < 4.5
    zigzag = EarlyStopper(mode="min", criteria=["up"], strip=1, up_strips=3)
    assert feed(zigzag, [5, 6, 5.5, 6.5, 6, 7]) is None


def test_combine_any_names_the_criterion_that_fired_and_all_waits_for_every_one():
    values = [10, 9, 9.5, 9.6, 9.7, 9.8]
    any_ = EarlyStopper(mode="min", patience=4, criteria=["patience", "gl"], gl_alpha=6)
    assert feed(any_, values) == (4, StopReason.GENERALIZATION_LOSS)  # 6.7% worse before patience runs out
    all_ = EarlyStopper(mode="min", patience=4, criteria=["patience", "gl"], gl_alpha=6, combine="all")
    assert feed(all_, values) == (6, "patience_exhausted+generalization_loss")


def test_warmup_is_keras_start_from_epoch():
    stopper = EarlyStopper(mode="min", patience=1, warmup=3)
    for epoch, value in enumerate([1, 0.5, 0.2], start=1):  # epochs 1..3 are not monitored at all
        assert stopper.update(epoch, value) == Check(is_best=False, improved=False, stop=None)
    assert stopper.best is None and stopper.wait == 0
    assert stopper.update(4, 8).is_best  # the first monitored epoch is warmup + 1
    assert stopper.update(5, 9).stop == StopReason.PATIENCE_EXHAUSTED
    zero, one = EarlyStopper(mode="min", warmup=0), EarlyStopper(mode="min", warmup=1)
    assert zero.update(1, 5.0).is_best and not one.update(1, 5.0).is_best  # 0 and 1 differ now


def test_replay_handles_checks_spaced_by_metrics_every():
    values = [9, 8, 7.9, 7.95, 7.8, 7.85, 7.9, 7.7, 7.9, 7.9, 7.6]  # metrics.every=3, then the last epoch
    checks = [(epoch, value, None) for epoch, value in zip([*range(3, 31, 3), 31], values)]
    stopper = EarlyStopper(mode="min", patience=6, min_delta=0.5).replay(checks, last_epoch=31)
    assert (stopper.stopped_epoch, stopper.stop_reason, stopper.best_epoch) == (12, StopReason.PATIENCE_EXHAUSTED, 9)
    patient = EarlyStopper(mode="min", patience=50).replay(checks, last_epoch=31)
    assert (patient.stopped_epoch, patient.stop_reason, patient.best_epoch) == (31, StopReason.MAX_EPOCHS, 31)


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


def test_patience_increase_waits_longer_as_the_run_ages():
    # gains at epochs 10, 20, 40 and 80: each plateau as long as the run before it, as FID creeps down
    curve = [50 - 10 * sum(epoch >= gain for gain in (10, 20, 40, 80)) for epoch in range(1, 201)]
    fixed = EarlyStopper(mode="min", patience=25)
    assert feed(fixed, curve) == (65, StopReason.PATIENCE_EXHAUSTED) and fixed.best == 20  # missed epoch 80
    growing = EarlyStopper(mode="min", patience=25, patience_increase=2.0)
    assert feed(growing, curve) == (160, StopReason.PATIENCE_EXHAUSTED)  # 2 x 80, later than 80 + 25
    assert growing.best == 10 and growing.best_epoch == 80
    early = EarlyStopper(mode="min", patience=25, patience_increase=1.1)
    assert feed(early, [5] * 10 + [4] * 60) == (36, StopReason.PATIENCE_EXHAUSTED)  # 11 + 25, after 1.1 x 11
    exact = EarlyStopper(mode="min", patience=5, patience_increase=1.1)
    falling_to_50 = [100 - epoch for epoch in range(1, 51)] + [50] * 20
    assert feed(exact, falling_to_50) == (55, StopReason.PATIENCE_EXHAUSTED)  # 1.1 x 50 is 55.000...01


def test_patience_increase_needs_an_improvement_to_wait_longer():
    unbeaten = EarlyStopper(mode="min", patience=5, patience_increase=2.0, warmup=20, baseline=1.0)
    assert feed(unbeaten, [2.0] * 60) == (25, StopReason.PATIENCE_EXHAUSTED)  # no gain to wait on: 20 + 5


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
    options = dict(mode="min", patience=3, patience_increase=1.5, min_delta=0.2, criteria=["patience", "trend", "up"],
                   window=3, strip=1)
    reference = EarlyStopper(**options)
    expected = feed(reference, values)
    first = EarlyStopper(**options)
    assert feed(first, values[:3]) is None
    second = EarlyStopper(**options)
    second.load_state_dict(first.state_dict())
    assert feed(second, values[3:], start=4) == expected
    assert second.state_dict() == reference.state_dict()


@pytest.mark.parametrize("kwargs", [{"mode": "up"}, {"patience": -1}, {"min_delta_mode": "percent"},
                                    {"criteria": []}, {"criteria": ["patience", "slope"]}, {"combine": "most"},
                                    {"delta_reference": "first"}, {"window": 2}, {"patience_increase": 0.5}])
def test_bad_options_are_rejected(kwargs):
    with pytest.raises(ValueError):
        EarlyStopper(**kwargs)
