"""Stopper search by replay: finished runs' curves in, the best stopping section out, nothing trained."""

import math
import time
from pathlib import Path

import mlflow
import optuna
import pytest
import yaml
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from conftest import invoke, report_checks
from ganstop import recipe as rc
from ganstop.stopping.replay import Curve, load_curves, replay
from ganstop.study.forecast_pruner import CONFIDENCE

CIFAR = Path(__file__).resolve().parents[1] / "benchmarks" / "curves" / "studiogan-cifar10.json"


def log_curves(experiment: str, cut: int = 2) -> list[str]:
    """Twelve real FID curves as finished ganstop-like runs; the last ``cut`` end at 60% of their budget."""
    client = MlflowClient()
    experiment_id = client.create_experiment(experiment)
    _, curves = load_curves(CIFAR)
    ids, now = [], int(time.time() * 1000)
    for i, curve in enumerate(curves[:12]):
        run = client.create_run(experiment_id)
        checks = curve.checks[: int(0.6 * curve.budget)] if i >= 12 - cut else curve.checks
        client.log_batch(run.info.run_id, params=[Param("train.max_epochs", str(curve.budget)), Param("mode", "min")],
                         metrics=[Metric("fid", value, now, epoch) for epoch, value, _ in checks])
        client.set_terminated(run.info.run_id)
        ids.append(run.info.run_id)
    return ids


def test_replay_searches_the_stopping_space_and_logs_the_best_section(tracking, capsys):
    ids = log_curves("finished")
    code, out, err = invoke(["replay", "--recipe", "digits-dcgan", "--from-experiment", "finished", "--n-trials", "30",
                             "--sampler-seed", "0"], capsys)
    assert code == 0, err
    assert "replayed 30 stopping settings on 12 curves (2 censored)" in out
    client = MlflowClient()
    [run] = [r for r in client.search_runs([client.get_experiment_by_name("finished").experiment_id])
             if r.info.run_id not in ids]
    assert run.data.tags["ganstop.role"] == "replay" and run.data.params["n_censored"] == "2"
    assert run.data.metrics["best_value"] <= run.data.metrics["recipe_value"]  # the recipe's own setting is trial 0
    folder = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="replay"))
    assert {"stopping.yaml", "trials.csv", "pareto.png"} <= {p.name for p in folder.iterdir()}
    section = yaml.safe_load((folder / "stopping.yaml").read_text())["stopping"]
    assert set(section) == {"tolerance", "confidence", "patience", "min_delta", "warmup"}
    best = rc.load("digits-dcgan", [(f"stopping.{k}", v) for k, v in section.items()])  # a valid recipe snippet
    assert best.stopping.tolerance == section["tolerance"]


def test_replay_needs_curves_and_says_so_in_one_line(tracking, capsys):
    code, _, err = invoke(["replay", "--recipe", "digits-dcgan"], capsys)
    assert code == 2 and "--from-experiment, --from-study or --from-run" in err and len(err.strip().splitlines()) == 1
    MlflowClient().create_experiment("empty")
    code, _, err = invoke(["replay", "--recipe", "digits-dcgan", "--from-experiment", "empty"], capsys)
    assert code == 2 and "no finished run in experiment 'empty' logged fid" in err
    code, _, err = invoke(["replay", "--recipe", "digits-dcgan", "--from-experiment", "nope"], capsys)
    assert code == 2 and "no MLflow experiment named 'nope'" in err


def test_each_replayed_run_holds_the_forecast_until_its_own_lr_schedule_annealed(tracking):
    from ganstop.training.optim import annealed_epoch
    from ganstop.study.replay_search import curves_from_runs

    client = MlflowClient()
    experiment_id = client.create_experiment("schedules")
    ids, now = [], int(time.time() * 1000)
    for params in ({}, {"decay.g_schedule": "cosine", "decay.g_final_lr": "0.001"}):  # a study's trials differ
        run = client.create_run(experiment_id)
        client.log_batch(run.info.run_id, params=[Param("train.max_epochs", "100"), *(Param(k, v) for k, v in params.items())],
                         metrics=[Metric("fid", 50.0 - epoch / 10, now, epoch) for epoch in range(1, 101)])
        client.set_terminated(run.info.run_id)
        ids.append(run.info.run_id)
    curves = {c.name: c for c in curves_from_runs(rc.load("digits-dcgan"), run_ids=tuple(ids), client=client)}
    assert curves[ids[0]].annealed_at is None  # digits decays no LR, and the run logged none
    assert curves[ids[1]].annealed_at == annealed_epoch(rc.DecayConfig(g_schedule="cosine", g_final_lr=0.001), 100) > 50


def test_a_censored_run_is_scored_where_its_record_ends():
    checks = [(epoch, 50 - epoch, None) for epoch in range(1, 31)]  # still improving when its own stopper ended it
    censored = Curve("cut", checks, budget=100, censored=True)
    never = rc.StoppingConfig(criteria=["patience"])  # patience off: this rule never stops by itself
    outcome = replay(censored, never)
    assert outcome.censored and outcome.stopped_epoch == 30 and outcome.share == 0.3 and outcome.best == 20
    early = replay(censored, rc.StoppingConfig(criteria=["patience"], patience=0, min_delta=5.0))
    assert not early.censored and early.stopped_epoch < 30  # a rule that stops inside the record is scored as usual


def test_every_shipped_curve_file_names_its_source_and_reads_as_curves():
    for path in sorted(CIFAR.parent.glob("*.json")):
        source, curves = load_curves(path)
        own = path.name.startswith("ganstop-")  # this repository's study tables: the command that made them
        assert ("python benchmarks/study_tables.py" if own else "License") in source and "commit" in source, path.name
        assert curves and all(c.budget == len(c.checks) >= 8 and c.mode == "min" for c in curves), path.name


def test_replay_of_a_run_that_does_not_exist_is_one_line_and_exit_2(tracking, capsys):
    code, out, err = invoke(["replay", "--recipe", "digits-dcgan", "--from-run", "0123456789abcdef"], capsys)
    assert code == 2 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == "ganstop: error: no MLflow run '0123456789abcdef' in the tracking store"


def log_study(name: str, curves: dict) -> None:
    """Trials (number -> FID at each of 50 epochs) logged as `ganstop tune --pruner none` logs them."""
    client = MlflowClient()
    experiment_id = client.create_experiment(f"study {name}")
    now = int(time.time() * 1000)
    for number, curve in curves.items():
        run = client.create_run(experiment_id, tags={"ganstop.study": name, "ganstop.role": "trial",
                                                     "ganstop.trial": str(number)})
        client.log_batch(run.info.run_id, params=[Param("train.max_epochs", "50")],
                         metrics=[Metric(key, value, now, e) for e in range(1, 51)
                                  for key, value in (("fid", curve(e)), ("epoch_seconds", 36.0))])
        client.set_terminated(run.info.run_id)


def test_hyperband_replays_each_trial_in_the_bracket_the_live_study_gave_it(tracking, capsys, monkeypatch):
    """Optuna's hyperband picks a trial's bracket by hashing the study's name and the trial's number:
    the replay reports each trial under the study's name and its own number, a failed trial's (3,
    which left no curve) included, so the brackets are the live study's and the replay is the same
    on every run."""
    log_study("nightly", {n: (lambda e, n=n: 10 + n + 40 * math.exp(-e / (3 + n))) for n in (0, 1, 2, 4, 5, 6, 7)})
    seen = []
    bracket = optuna.pruners.HyperbandPruner._get_bracket_id

    def spy(self, study, trial):
        seen.append((study.study_name, trial.number))
        return bracket(self, study, trial)

    monkeypatch.setattr(optuna.pruners.HyperbandPruner, "_get_bracket_id", spy)
    outs = []
    for _ in range(2):
        code, out, err = invoke(["replay", "--recipe", "digits-dcgan", "--from-study", "nightly",
                                 "--pruners", "hyperband"], capsys)
        assert code == 0, err
        outs.append(out)
    assert {name for name, _ in seen} == {"nightly"}
    assert {number for _, number in seen} == set(range(8))  # 4 to 7 keep their numbers behind the failed 3
    assert outs[0] == outs[1]


def test_pruners_replayed_on_a_logged_study(tracking, capsys):
    """Six trials logged as `ganstop tune --pruner none` logs them: four plateau, one starts slow and ends
    best, one is hopeless. Every pruner keeps some trial; the full replay keeps the slow starter; the
    pruners that fire spend fewer epochs and hours; forecast keeps the slow starter."""
    curves = [lambda e, k=k: 10 + k + 40 * math.exp(-e / 5) for k in range(4)]
    curves += [lambda e: 5 + 200 * math.exp(-e / 12), lambda e: 40 + 40 * math.exp(-e / 5)]
    log_study("s", dict(enumerate(curves)))
    code, out, err = invoke(["replay", "--recipe", "digits-dcgan", "--from-study", "s",
                             "--pruners", "median,forecast"], capsys)
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "300 epochs" in rows["none"] and "3.00 h" in rows["none"] and "keeps trial 4" in rows["none"]
    assert "keeps trial 4" in rows["forecast"] and "not the full study best" not in rows["forecast"]
    assert "not the full study best" in rows["median"]  # median kills the slow starter
    spent = {name: int(row.split()[1]) for name, row in rows.items()}
    assert spent["forecast"] < spent["none"] and spent["median"] < spent["none"]
    assert "forecast at confidence 0.1)" in out.splitlines()[0]
    assert CONFIDENCE == 0.1  # the CLI default is a literal (it starts without the pruner): the same one
    # --prune-confidence means what it means in `ganstop tune`: a bolder forecast prunes sooner
    code, out, err = invoke(["replay", "--recipe", "digits-dcgan", "--from-study", "s", "--pruners", "forecast",
                             "--prune-confidence", "0.9"], capsys)
    assert code == 0, err
    assert "forecast at confidence 0.9)" in out.splitlines()[0]
    bold = {line.split()[0]: int(line.split()[1]) for line in out.splitlines()[1:]}
    assert bold["none"] == spent["none"] and bold["forecast"] < spent["forecast"]
    code, _, err = invoke(["replay", "--recipe", "digits-dcgan", "--from-study", "s", "--pruners", "bogus"], capsys)
    assert code == 2 and "unknown pruner 'bogus'" in err
    code, _, err = invoke(["replay", "--recipe", "digits-dcgan", "--from-study", "s", "--prune-confidence", "0.2"],
                          capsys)  # a confidence with nothing to apply it to is a mistake, not a no-op
    assert code == 2 and "--prune-confidence is the forecast pruner's" in err


def test_the_replay_reports_each_check_as_tune_reports_it(monkeypatch):
    """The replay is exact only while it reports what `ganstop tune` reports (each check's metric plus
    the compute charge so far): a pruner fed the same curve by both sees the same values."""
    from ganstop.study import replay_pruners
    from ganstop.study.objective import Objective, OptunaPruning
    from ganstop.study.space import SearchSpace

    fids = [5.0, 3.0, 4.0, 2.5, 6.0, 2.0]
    seen = {}

    class Recorder(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            seen.update(trial.intermediate_values)
            return False

    monkeypatch.setattr(replay_pruners, "make_pruner", lambda *args, **kwargs: Recorder())
    curve = Curve("t", [(epoch, fid, None) for epoch, fid in enumerate(fids, start=1)], len(fids), "min")
    replay_pruners.replay_study([(0, curve, [1.0] * len(fids))], "recorder", weight=1.2, study_name="s")
    objective = Objective(rc.load(None, [("train.max_epochs", len(fids))]), SearchSpace({}, compute_weight=1.2),
                          "fid", "min", "p", "0", "s", client=None)
    trial = optuna.create_study(pruner=optuna.pruners.NopPruner()).ask()
    pruning = OptunaPruning(trial, "fid", objective)
    report_checks(pruning, "fid", fids)
    tune = trial.storage.get_trial(trial._trial_id).intermediate_values
    assert seen == pytest.approx({epoch: tune[epoch] for epoch in seen}) and len(seen) >= 5
    assert seen[5] == pytest.approx(6.0 + 1.0)  # the fifth check's own value, not the best so far (2.5)
