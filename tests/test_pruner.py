"""ForecastPruner on hand-made studies, in Optuna's style: finished trials added with
``create_trial``/``add_trial``, the trial under test driven by ``ask``/``report``/``should_prune``."""

import math
import sys

import numpy as np
import optuna
import pytest
from mlflow.tracking import MlflowClient

from conftest import ROOT, report_checks
from ganstop import ForecastPruner
from ganstop.stopping.replay import load_curves
from ganstop.study import forecast_pruner
from ganstop.study.pruners import make_pruner

State = optuna.trial.TrialState
STEPS = 50
EARLY = STEPS // 4  # a hopeless trial is pruned within a quarter of the budget
optuna.logging.set_verbosity(optuna.logging.WARNING)


def fast(t):  # starts fast, levels off near 10
    return 10 + 40 * math.exp(-t / 5)


def finished(curve, state=State.COMPLETE, steps=STEPS, sign=1.0):
    values = {t: sign * curve(t) for t in range(1, steps + 1)}
    best = min(values.values()) if sign > 0 else max(values.values())
    return optuna.trial.create_trial(state=state, value=best if state == State.COMPLETE else None,
                                     intermediate_values=values)


def study_of(*trials, direction="minimize", storage=None, name=None):
    study = optuna.create_study(direction=direction, pruner=ForecastPruner(max_resource=STEPS), storage=storage,
                                study_name=name)
    for trial in trials:
        study.add_trial(trial)
    return study


def first_prune(study, curve, sign=1.0):
    """The step the pruner first fires at while ``curve`` is reported, or None."""
    trial = study.ask()
    for t in range(1, STEPS + 1):
        trial.report(sign * curve(t), t)
        if trial.should_prune():
            return t
    return None


def plateaus():
    return [finished(lambda t, k=k: fast(t) + k) for k in range(5)]


@pytest.mark.parametrize("kwargs", [dict(max_resource=0), dict(max_resource="all"), dict(max_resource=True),
                                    dict(confidence=0.0), dict(confidence=1.0), dict(warmup=-0.1),
                                    dict(warmup=1.0), dict(n_min_trials=0)])
def test_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        ForecastPruner(**{"max_resource": 10, **kwargs})


def test_a_trial_worse_at_every_share_than_every_completed_one_is_pruned_early():
    assert 5 <= first_prune(study_of(*plateaus()), lambda t: fast(t) + 15) <= EARLY


def test_the_same_in_a_study_that_maximizes():
    study = study_of(*[finished(lambda t, k=k: fast(t) + k, sign=-1.0) for k in range(5)], direction="maximize")
    assert 5 <= first_prune(study, lambda t: fast(t) + 15, sign=-1.0) <= EARLY


def test_a_slow_starter_that_ends_best_is_not_pruned():
    # behind every completed trial until past the middle of the budget, but falling fast all along
    slow = lambda t: 5 + 200 * math.exp(-t / 12)  # noqa: E731
    assert slow(25) > fast(25) + 4 and slow(STEPS) < 10
    assert first_prune(study_of(*plateaus()), slow) is None
    # and the rule that compares trials at equal steps kills it
    median = optuna.create_study(pruner=make_pruner("median"))
    for trial in plateaus():
        median.add_trial(trial)
    assert first_prune(median, slow) is not None


def test_a_trial_is_judged_by_the_futures_of_the_trials_that_stood_where_it_stands():
    # four slow starters sit at the ceiling (1.0) until 40% of the budget, then fall to the best
    # (0.05); twelve others level off at 0.40-0.51. A trial among those twelve: a slow starter's
    # gain from the ceiling (95%), applied to its level, would carry it past the best, but none of
    # the ten trials that stood nearest it gained a tenth of that
    slow = lambda t: 1.0 if t <= 20 else 0.05 + 0.95 * math.exp(-(t - 20) / 5)  # noqa: E731
    middle = lambda t, k=0.0: 0.4 + k + 0.6 * math.exp(-t / 8)  # noqa: E731
    trials = lambda: [finished(slow) for _ in range(4)] + \
        [finished(lambda t, k=k: middle(t, 0.01 * k)) for k in range(12)]  # noqa: E731
    pruned = first_prune(study_of(*trials()), lambda t: middle(t, 0.005))
    assert pruned is not None and pruned <= 15  # every finished trial's future kept it to step 27
    # a slow starter stands among the slow starters, and their futures keep it to the end
    assert first_prune(study_of(*trials()), lambda t: slow(t) + 0.001) is None


def test_a_trial_that_leads_then_collapses_is_pruned_soon_after_the_turn():
    # the completed trials gain a lot late (their LRs anneal), so a leader is worth keeping ...
    late = [finished(lambda t, k=k: 60 - t + k) for k in range(5)]  # 10-14 at the end
    turn = 20
    collapse = lambda t: 50 - 1.5 * t if t <= turn else 150  # noqa: E731  ahead of all until the turn
    assert all(collapse(t) < 60 - t for t in range(1, turn + 1))
    pruned = first_prune(study_of(*late), collapse)
    assert pruned is not None and turn < pruned <= turn + 6


def test_a_trial_whose_best_check_ties_the_incumbent_within_its_noise_is_kept_even_as_it_collapses():
    # a noisy trial (one check's noise 0.4) whose best check lands 0.05 above the incumbent (10.0),
    # then collapses at 80% of its budget: pruning it would throw away a checkpoint as good as the
    # incumbent by luck of the draw, to save a fifth of one trial
    noise = np.random.default_rng(0).normal(0, 0.4, STEPS + 1)
    noise -= noise.min() - 0.05 + 0.5  # the best check sits at 10.05 on a level of 10.5
    turn = 40

    def tied(t, offset=0.0):
        return 10.5 + offset + noise[t] if t <= turn else 30.0

    assert min(tied(t) for t in range(1, turn + 1)) == pytest.approx(10.05)
    assert first_prune(study_of(*plateaus()), tied) is None
    # the same collapse from a best clearly behind the incumbent is pruned
    assert first_prune(study_of(*plateaus()), lambda t: tied(t, offset=3.0)) is not None


def test_near_ties_at_the_incumbents_level_read_the_incumbents_noise():
    """A trial still flat at a bounded metric's ceiling (mode error near 1) reports without noise;
    the one finished trial fell from there to a level where its checks scatter by 10%. Its future
    leads this trial to within that scatter of the incumbent: a near tie, kept. Read with this
    trial's own noise (none) for both checks, the tie was a hard loss and the trial was pruned at
    the warm-up. Against an incumbent without noise it is a hard loss either way."""

    def falling(t):
        return 0.06 + 0.92 / (1 + math.exp((t - 15) / 4))

    def flat_then_falling(t):  # at 0.95 until epoch 8, then as the finished trial, 5% behind
        return 0.95 if t <= 8 else min(0.95, falling(t) * 0.95 / falling(5))

    steps = {}
    for scatter in (0.0, 0.006):
        rng = np.random.default_rng(0)
        values = {t: falling(t) + scatter * float(rng.normal()) for t in range(1, STEPS + 1)}
        done = optuna.trial.create_trial(state=State.COMPLETE, value=min(values.values()), intermediate_values=values)
        steps[scatter] = first_prune(study_of(done), flat_then_falling)
    assert steps[0.0] == STEPS // 10  # the first report after the warm-up
    assert steps[0.006] is None or steps[0.006] > STEPS // 2


def test_a_slow_starter_of_the_grid25_table_is_kept_after_a_noisy_incumbent():
    """The shipped grid25 table: trial 36 sits at mode error 0.98 for three checks, then falls to
    the table's second-best value (0.051); trial 37 ended at 0.066. Coming second, trial 36 was
    pruned at a tenth of its budget while its reports were still noiseless (studies of 12 trials
    drawn from the table lost it so); with the incumbent's own noise it completes as the best."""
    _, curves = load_curves(ROOT / "benchmarks" / "curves" / "ganstop-grid25-mlp.json")
    study = replayed(curves, (37, 36))
    assert [t.state for t in study.trials] == [State.COMPLETE, State.COMPLETE]
    assert study.best_trial.number == 1 and study.best_value == min(v for _, v, _ in curves[36].checks)


def test_tunes_reports_keep_the_ring8_tables_second_best_trial_coming_second():
    """``ganstop tune``'s reports (OptunaPruning) of the shipped ring8 table's trial 1, then trial
    29, the table's second best. Reported check by check, trial 29's scatter reads as its checks'
    noise, its near ties are kept, and it completes as the study's best. Reported as the best so
    far (as tune did before), its staircase read noiseless and it was pruned, the study's best
    61% behind."""
    from types import SimpleNamespace

    from ganstop import recipe as rc
    from ganstop.study.objective import Objective, OptunaPruning
    from ganstop.study.space import SearchSpace

    _, curves = load_curves(ROOT / "benchmarks" / "curves" / "ganstop-ring8-mlp.json")
    objective = Objective(rc.load(None, [("train.max_epochs", 100)]), SearchSpace({}, compute_weight=0.0),
                          "mode_error", "min", "p", "0", "s", client=None)
    study = optuna.create_study(pruner=ForecastPruner(max_resource=100))
    for curve in (curves[1], curves[29]):
        trial, values = study.ask(), [v for _, v, _ in curve.checks]
        pruning = OptunaPruning(trial, "mode_error", objective)
        pruning.on_train_start(SimpleNamespace(recipe=objective.base))
        try:
            report_checks(pruning, "mode_error", values)
        except optuna.TrialPruned:
            study.tell(trial, state=State.PRUNED)
            continue
        study.tell(trial, objective.value(min(values), len(values)))
    assert [t.state for t in study.trials] == [State.COMPLETE, State.COMPLETE]
    assert study.best_trial.number == 1
    assert study.best_value == min(v for _, v, _ in curves[29].checks)


def test_a_trial_better_than_the_incumbent_is_never_pruned():
    assert first_prune(study_of(*plateaus()), lambda t: fast(t) - 2) is None


def test_no_pruning_before_the_warm_up_or_without_completed_trials():
    study = study_of(*plateaus())
    trial = study.ask()
    for t in range(1, 5):  # a tenth of 50 steps
        trial.report(1e6, t)
        assert not trial.should_prune()
    empty = study_of(*[finished(fast, state=State.PRUNED, steps=10) for _ in range(5)])
    assert first_prune(empty, lambda t: 1e6) is None


def flat_behind_at_15(*trials):
    """Whether a trial flat at 30 is pruned at step 15 of a study of ``trials``."""
    trial = study_of(*trials).ask()
    for t in range(1, 16):
        trial.report(30 + 0.01 * (t % 2), t)
    return trial.should_prune()


def test_pruned_trials_count_as_censored():
    flat = [finished(lambda t, k=k: 20 + k) for k in range(4)]  # incumbent 20, none gained anything
    assert flat_behind_at_15(*flat)
    # trials pruned at 60% after falling from 30 to 15 at 50%: their futures, cut short, already won
    fallers = [finished(lambda t: 30 if t < 25 else 15, state=State.PRUNED, steps=30) for _ in range(4)]
    assert not flat_behind_at_15(*flat, *fallers)
    # many trials pruned flat at 40%: their futures are unknown, not losses, so they change nothing
    cut = [finished(lambda t: 30.0, state=State.PRUNED, steps=20) for _ in range(20)]
    assert not flat_behind_at_15(*flat, *fallers, *cut)


def test_the_curve_model_is_the_prior_of_the_studys_futures(monkeypatch):
    """Three finished trials, none of whose futures carries a trial flat at 30 to the incumbent
    (20): with so little evidence the curve model's reading decides (PRIOR pseudo-futures win as
    often as it says); with twenty, the study's own futures outweigh whatever it says."""
    flat = [finished(lambda t, k=k: 20 + k) for k in range(20)]
    for chance, pruned in ((0.9, False), (0.0, True)):
        monkeypatch.setattr(forecast_pruner, "model_chance", lambda *_, chance=chance: chance)
        assert flat_behind_at_15(*flat[:3]) is pruned
    monkeypatch.setattr(forecast_pruner, "model_chance", lambda *_: 1.0)
    assert flat_behind_at_15(*flat)


def test_the_curve_models_chance_reads_the_curve_in_shares_of_the_budget():
    steps = np.arange(1, 16, dtype=float)
    falling = 20 + 80 * np.exp(-steps / 8)  # still falling fast at 30% of the budget
    flat = 30 + np.random.default_rng(0).normal(0, 0.3, steps.size)
    bar = 0.8 * falling.min()  # a fifth below its best so far
    assert forecast_pruner.model_chance(steps, falling, STEPS, bar) > 0.5
    assert forecast_pruner.model_chance(steps, flat, STEPS, 20.0) < 0.1  # a third below a plateau
    assert forecast_pruner.model_chance(4 * steps, falling, 4 * STEPS, bar) == \
        pytest.approx(forecast_pruner.model_chance(steps, falling, STEPS, bar))
    assert forecast_pruner.model_chance(steps[:4], falling[:4], STEPS, bar) == 0.5  # too few reports: no opinion


def test_non_finite_values():
    broken = [finished(lambda t: float("nan") if t % 3 == 0 else fast(t) + 1) for _ in range(4)]
    study = study_of(*plateaus(), *broken)
    assert 5 <= first_prune(study, lambda t: fast(t) + 15) <= EARLY
    trial = study_of(*plateaus()).ask()
    trial.report(float("nan"), 1)
    assert trial.should_prune()


def test_unsorted_intermediate_values_and_steps_from_zero_decide_alike():
    def trials(order):
        return [optuna.trial.create_trial(value=fast(STEPS) + k, intermediate_values={
            t: fast(t) + k for t in order}) for k in range(5)]

    forward, backward = list(range(0, STEPS + 1)), list(range(STEPS, -1, -1))
    assert first_prune(study_of(*trials(forward)), lambda t: fast(t) + 15) == \
        first_prune(study_of(*trials(backward)), lambda t: fast(t) + 15)


def test_one_finished_trial_is_evidence_enough_by_default():
    """The curve model's prior and the trial's own forecast carry the first decisions: with one
    completed trial a hopeless one is pruned early; asking for three finished trials waits."""
    hopeless = lambda t: fast(t) + 15  # noqa: E731
    assert 5 <= first_prune(study_of(finished(fast)), hopeless) <= EARLY
    patient = optuna.create_study(pruner=ForecastPruner(max_resource=STEPS, n_min_trials=3))
    patient.add_trial(finished(fast))
    assert first_prune(patient, hopeless) is None


def test_auto_max_resource_reads_the_completed_trials():
    study = optuna.create_study(pruner=ForecastPruner())
    for trial in plateaus():
        study.add_trial(trial)
    assert 5 <= first_prune(study, lambda t: fast(t) + 15) <= EARLY


def test_two_workers_on_one_storage_decide_alike(tmp_path):
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    one = study_of(*plateaus(), finished(fast, state=State.PRUNED, steps=12), storage=storage, name="shared")
    two = optuna.load_study(study_name="shared", storage=storage, pruner=ForecastPruner(max_resource=STEPS))
    hopeless, good = one.ask(), two.ask()
    decisions = []
    for t in range(1, 15):
        hopeless.report(fast(t) + 15, t)
        good.report(fast(t) - 1, t)
        for trial in (hopeless, good):
            frozen = one._storage.get_trial(trial._trial_id)
            decisions.append((one.pruner.prune(one, frozen), two.pruner.prune(two, frozen)))
    assert all(a == b for a, b in decisions)
    assert any(a for a, _ in decisions[0::2]) and not any(a for a, _ in decisions[1::2])


def test_forecast_is_exported_and_built_by_name():
    assert isinstance(make_pruner("forecast", max_resource=30), ForecastPruner)
    with pytest.raises(ValueError):
        make_pruner("forecast", max_resource=30, confidence=2.0)


@pytest.mark.slow
def test_tune_with_the_forecast_pruner_mirrors_optuna_states(search_recipe, tracking, tmp_path):
    import subprocess

    from conftest import cli_env
    from test_study import assert_mirrored

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    cmd = [sys.executable, "-m", "ganstop", "tune", "--recipe", str(search_recipe), "--n-trials", "6",
           "--storage", storage, "--study-name", "forecast", "--sampler-seed", "1", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(MLFLOW_TRACKING_URI=tracking), timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    study = optuna.load_study(study_name="forecast", storage=storage)
    assert_mirrored(MlflowClient(), study)
    assert any(t.state == State.COMPLETE for t in study.trials)
    assert np.isfinite(study.best_value)



def replayed(curves, order, pruner=None) -> optuna.Study:
    """The table's curves as trials in ``order``, each reported raw at ceil(STEPS i / n) as
    benchmarks/study_replay.py does; a completed trial's value is its best check."""
    study = optuna.create_study(pruner=pruner or ForecastPruner(max_resource=STEPS))
    for curve in (curves[i] for i in order):
        trial, values = study.ask(), [v for _, v, _ in curve.checks]
        reports = {math.ceil(STEPS * i / len(values)): v for i, v in enumerate(values, start=1)}
        pruned = False
        for step, value in sorted(reports.items()):
            trial.report(value, step)
            if step < STEPS and trial.should_prune():
                study.tell(trial, state=State.PRUNED)
                pruned = True
                break
        if not pruned:
            study.tell(trial, min(values))
    return study


def test_the_best_of_near_tied_digits_trials_is_kept_when_it_comes_last():
    """The shipped digits table's first five trials, whose best FIDs lie within 15% of each other,
    trial 1 the best by 7%, all near 50 at 14% of the budget. Coming last, trial 1 stood 5% behind
    there, less than its checks' noise; a hard count of the futures that beat the incumbent (none
    did, by a hair) pruned it. The chance by noise keeps it, and it completes as the study's best."""
    _, curves = load_curves(ROOT / "benchmarks" / "curves" / "ganstop-digits-dcgan.json")
    study = replayed(curves, (2, 4, 3, 0, 1))
    assert study.best_trial.number == 4 and study.best_value == min(v for _, v, _ in curves[1].checks)


@pytest.mark.parametrize("order_seed", [6, 9])
def test_a_study_of_forty_near_tied_digits_trials_keeps_one_within_five_percent(order_seed):
    """All 40 trials of the shipped digits table: only 4 end within 5% of the best, and at any
    share before the end they look like the other 36. Each is, fairly, unlikely to beat an
    incumbent that is the best of many; pruning every trial below a 20% chance lost all four in
    these orders (and in 21 of the orders seeded 0-119), below the default 10% keeps one (in each
    of those 21)."""
    _, curves = load_curves(ROOT / "benchmarks" / "curves" / "ganstop-digits-dcgan.json")
    best = min(v for c in curves for _, v, _ in c.checks)
    order = np.random.default_rng(order_seed).permutation(len(curves))
    assert replayed(curves, order).best_value <= 1.05 * best
    eager = replayed(curves, order, ForecastPruner(max_resource=STEPS, confidence=0.2))
    assert eager.best_value > 1.05 * best
