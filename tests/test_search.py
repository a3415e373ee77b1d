import optuna
import pytest

from conftest import ROOT, report_checks
from ganstop import recipe as rc
from ganstop.study.objective import Objective
from ganstop.study.space import SearchSpace
from ganstop.study.pruners import make_pruner

RING = ROOT / "recipes" / "ring8-mlp.yaml"


def with_search(search: dict) -> rc.Recipe:
    recipe = rc.load(RING)
    recipe.search = search
    return recipe


def test_every_shipped_space_is_valid():
    for path in sorted((ROOT / "recipes").glob("*.yaml")):
        space = SearchSpace.from_recipe(rc.load(path, [("dataset.root", "/data")]))
        assert {"stopping.patience", "stopping.min_delta", "stopping.warmup"} <= set(space.space)
        assert any(k.startswith("decay.") for k in space.space) and "ema.decay" in space.space
        assert space.compute_weight > 0


@pytest.mark.parametrize("space, message", [
    ({"stopping.patiense": {"type": "int", "low": 1, "high": 3}}, "did you mean 'patience'"),
    ({"stopping.patience": {"type": "int", "low": 5, "high": 1}}, "low <= high"),
    ({"stopping.patience": {"type": "gaussian"}}, "type int, float or categorical"),
    ({"stopping.min_delta": {"type": "float", "low": 0, "high": 1, "log": True}}, "low must be > 0"),
    ({"stopping.warmup": {"type": "int", "low": 1, "high": 500}}, "below train.max_epochs"),
    ({"decay.g_schedule": {"type": "categorical", "choices": ["cosine", "sine"]}}, "did you mean"),
    ({"ema.decay": {"type": "float", "low": 0.9, "high": 0.99, "choices": [1]}}, "unknown option 'choices'"),
    ({"stopping.criteria": {"type": "categorical", "choices": ["patience", "patience,slope"]}},
     "unknown stopping criterion 'slope'"),
])
def test_bad_search_spaces_name_the_problem(space, message):
    with pytest.raises(rc.RecipeError, match=message):
        SearchSpace.from_recipe(with_search({"space": space}))


def test_stopping_criteria_are_searchable_as_comma_separated_choices():
    space = SearchSpace.from_recipe(with_search({"space": {
        "stopping.criteria": {"type": "categorical", "choices": ["patience", "trend", "patience,gl"]},
        "stopping.combine": {"type": "categorical", "choices": ["any", "all"]}}}))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(12):
        values = space.suggest(study.ask())
        recipe = rc.load(None, list(values.items()), base=with_search({}))
        seen.add((tuple(recipe.stopping.criteria), recipe.stopping.combine))
    assert {("patience",), ("trend",), ("patience", "gl")} <= {criteria for criteria, _ in seen}


def test_missing_space_and_unknown_section_keys():
    with pytest.raises(rc.RecipeError, match="no search.space"):
        SearchSpace.from_recipe(with_search({}))
    with pytest.raises(rc.RecipeError, match="unknown search key 'spaces'"):
        SearchSpace.from_recipe(with_search({"space": {"ema.decay": {"type": "float", "low": 0.9, "high": 0.99}},
                                             "spaces": 1}))


def test_same_seed_same_first_trials():
    space = SearchSpace.from_recipe(rc.load(RING))

    def first_params(seed):
        study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed))
        study.optimize(lambda t: sum(float(v) for v in space.suggest(t).values() if isinstance(v, (int, float))), n_trials=3)
        return [t.params for t in study.trials]

    assert first_params(7) == first_params(7)
    assert first_params(7) != first_params(8)


@pytest.mark.parametrize("name, cls", [
    ("median", optuna.pruners.MedianPruner), ("percentile", optuna.pruners.PercentilePruner),
    ("hyperband", optuna.pruners.HyperbandPruner), ("successive-halving", optuna.pruners.SuccessiveHalvingPruner),
    ("patient", optuna.pruners.PatientPruner), ("none", optuna.pruners.NopPruner),
])
def test_pruners(name, cls):
    assert isinstance(make_pruner(name), cls)


def test_threshold_pruner_needs_a_bound():
    with pytest.raises(rc.RecipeError, match="--prune-lower"):
        make_pruner("threshold")
    assert isinstance(make_pruner("threshold", upper=1.0), optuna.pruners.ThresholdPruner)


def test_objective_charges_for_compute_unless_quality_only():
    recipe = rc.load(RING)
    budget = recipe.train.max_epochs
    space = SearchSpace(SearchSpace.from_recipe(recipe).space, compute_weight=0.1)
    charged = Objective(recipe, space, "mode_kl", "min", "p", "0", "s", client=None)
    assert charged.value(0.5, budget // 2) == pytest.approx(0.5 + 0.1 * (budget // 2) / budget)
    assert charged.value(0.5, budget) > charged.value(0.5, 10)  # the longest patience does not win for free
    quality = Objective(recipe, space, "mode_kl", "min", "p", "0", "s", quality_only=True, client=None)
    assert quality.value(0.5, budget) == 0.5
    maximize = Objective(recipe, space, "hq_ratio", "max", "p", "0", "s", client=None)
    assert maximize.value(0.9, budget) == pytest.approx(0.8)


def test_pruning_reports_each_checks_objective_on_the_final_values_scale():
    from ganstop.study.objective import OptunaPruning

    recipe = rc.load(None, [("train.max_epochs", 10)])
    objective = Objective(recipe, SearchSpace({}, compute_weight=1.0), "fid", "min", "p", "0", "s", client=None)
    trial = optuna.create_study(pruner=optuna.pruners.NopPruner()).ask()
    pruning = OptunaPruning(trial, "fid", objective)
    report_checks(pruning, "fid", [3.0, 2.0, 5.0])
    reported = trial.storage.get_trial(trial._trial_id).intermediate_values
    assert reported == pytest.approx({1: 3.1, 2: 2.2, 3: 5.3})  # each check + 1.0 x epochs / 10, not the best so far


def test_a_trial_at_its_last_epoch_completes_whatever_the_pruner_says():
    """Pruning at the last epoch saves nothing and throws away the best checkpoint: with each check
    reported, a run whose last check is its worst looks prunable there (and replays never ask)."""
    from types import SimpleNamespace

    from ganstop.study.objective import OptunaPruning

    recipe = rc.load(None, [("train.max_epochs", 3)])
    objective = Objective(recipe, SearchSpace({}, compute_weight=0.0), "fid", "min", "p", "0", "s", client=None)
    study = optuna.create_study(pruner=optuna.pruners.ThresholdPruner(upper=4.0))

    def feed(fids):
        pruning = OptunaPruning(study.ask(), "fid", objective)
        pruning.on_train_start(SimpleNamespace(recipe=recipe))
        report_checks(pruning, "fid", fids)

    feed([3.0, 2.0, 5.0])  # over the threshold at its last epoch: completes
    with pytest.raises(optuna.TrialPruned, match="epoch 2"):
        feed([3.0, 5.0, 2.0])  # over it one epoch before: pruned


def test_the_sampler_has_its_own_seed_and_workers_never_share_one():
    from ganstop.study.space import make_sampler
    from ganstop.study.runner import _worker_commands

    space = SearchSpace.from_recipe(rc.load(RING))

    def first_trial(sampler):
        return space.suggest(optuna.create_study(sampler=sampler).ask())

    assert first_trial(make_sampler(3)) == first_trial(make_sampler(3))  # reproducible when asked for
    assert first_trial(make_sampler(None)) != first_trial(make_sampler(None))  # else fresh per process
    assert make_sampler(None)._constant_liar  # running trials count as bad: parallel workers spread out
    commands = _worker_commands(["tune", "--sampler-seed", "7"], 3, 6, "s", "sqlite:///x.db", sampler_seed=7)
    assert [c[-2:] for c in commands] == [["--sampler-seed", s] for s in ("7", "8", "9")]  # the last flag wins
    assert not any("--sampler-seed" in c[2:] for c in _worker_commands(["tune"], 2, 2, "s", "sqlite:///x.db", None))


def test_a_slow_tracking_server_still_gives_a_study_one_parent(tracking, tmp_path, monkeypatch):
    """Run creation slower than the joiners' wait: the old creator-then-parent order made two parents."""
    import threading
    import time

    from mlflow.tracking import MlflowClient

    from ganstop.study import objective, storage as study_storage

    monkeypatch.setattr(objective, "PARENT_WAIT_SECONDS", 0.5)
    storage = study_storage.make_storage(f"sqlite:///{tmp_path / 'optuna.db'}", 10, 30, 0)

    class SlowServer(MlflowClient):
        def create_run(self, *args, **kwargs):
            time.sleep(1.5)
            return super().create_run(*args, **kwargs)

    opened = []

    def open_one():
        opened.append(objective.open_study("slow", storage, optuna.samplers.RandomSampler(), optuna.pruners.NopPruner(),
                                           "minimize", "0", SlowServer()))

    threads = [threading.Thread(target=open_one) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({parent for _, parent, _ in opened}) == 1 and sum(created for *_, created in opened) == 1
    parents = MlflowClient().search_runs(["0"], "tags.`ganstop.role` = 'study'")
    assert [r.info.run_id for r in parents] == [opened[0][1]]  # the losers' candidate runs are deleted


def _racing_storage(monkeypatch, error):
    """RDBStorage whose first construction fails with ``error``, as a worker's does when another
    worker is creating the same fresh database's tables."""
    import sqlalchemy

    from ganstop.study import storage

    real, calls = optuna.storages.RDBStorage, []

    def racing(url, **kwargs):
        calls.append(url)
        if len(calls) == 1:
            raise sqlalchemy.exc.ProgrammingError("CREATE TABLE studies (...)", {}, error)
        return real(url, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", racing)
    monkeypatch.setattr(storage.time, "sleep", lambda seconds: None)
    return calls


def test_a_worker_that_loses_the_race_to_create_the_schema_opens_the_winners(monkeypatch, tmp_path):
    """Seen on PostgreSQL with 6 workers starting on a busy machine: `DuplicateTable`, exit 2."""
    import psycopg

    from ganstop.study.storage import make_storage

    calls = _racing_storage(monkeypatch, psycopg.errors.DuplicateTable('relation "studies" already exists'))
    storage = make_storage(f"sqlite:///{tmp_path / 'optuna.db'}", 10, 30, 0)
    assert len(calls) == 2 and storage.get_all_studies() == []


def test_other_database_errors_are_one_line_at_once(monkeypatch, tmp_path):
    import psycopg

    from ganstop.errors import RecipeError
    from ganstop.study.storage import make_storage

    calls = _racing_storage(monkeypatch, psycopg.errors.InsufficientPrivilege("permission denied for schema public"))
    with pytest.raises(RecipeError, match="cannot open storage .*permission denied"):
        make_storage(f"sqlite:///{tmp_path / 'optuna.db'}", 10, 30, 0)
    assert len(calls) == 1
