"""What the loop does besides training, and when: checks by a share of training time with a
floor under their cadence, one-offs spread over the run, full checkpoints by the clock, pictures
on news. Times are injected (a schedule driven with given costs, or the loop's clock moved by the
test), never measured: no test here depends on the machine's speed."""

import warnings

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from conftest import tiny
from ganstop import recipe as rc
from ganstop.tracking import runner
from ganstop.tracking.logger import TAG_CADENCE_WARNING, MlflowLogger
from ganstop.training.cadence import END_CHECKS, CheckSchedule
from ganstop.training.callbacks import Callback
from ganstop.training.loop import Trainer
from test_train import RING, make_trainer


def simulate(schedule: CheckSchedule, costs, first: int = 1, last: int | None = None) -> list[int]:
    """Drive the schedule over epochs ``first`` to ``last`` (its last); ``costs(epoch, checked)``
    gives the epoch's (training, everything else) seconds. The epochs it checked."""
    checked = []
    for epoch in range(first, (last or schedule.max_epochs) + 1):
        due = schedule.due(epoch, costs(epoch, False)[0])
        schedule.spent(epoch, *costs(epoch, due), due)
        checked += [epoch] if due else []
    return checked


def fixed(train: float, check: float, per_epoch: float = 0.0):
    return lambda epoch, checked: (train, per_epoch + (check if checked else 0.0))


def gaps(checked: list[int]) -> list[int]:
    return [b - a for a, b in zip([0, *checked], checked)]


@pytest.mark.parametrize("train, check", [(1.0, 0.5), (0.05, 0.4), (10.0, 0.2), (1.0, 0.05)])
def test_the_budget_holds_however_fast_the_epoch_is(train, check):
    schedule = CheckSchedule(budget=0.05, max_gap=1.0, max_epochs=2000)  # no floor: the budget alone
    checked = simulate(schedule, fixed(train, check))
    assert checked[0] == 1 and checked[-1] == 2000  # nothing spent yet: the first check measures the price
    # the end of the run within the budget too: the forced last check is in, the test scores (a check) are not
    assert schedule.other_seconds + check <= 0.05 * schedule.train_seconds
    # what the budget affords, the first (cold) check being a one-off charged over the whole run,
    # and the end (two checks) reserved a share at a time
    spaced = max(1, round(check / (0.05 * train - (1 + END_CHECKS) * check / 2000)))
    between = {b - a for a, b in zip(checked[1:-2], checked[2:-1])}
    assert between and max(between) - min(between) <= 1 and abs(min(between) - spaced) <= 1


def test_time_spent_besides_checks_leaves_less_for_checks():
    lean, heavy = (CheckSchedule(budget=0.1, max_gap=1.0, max_epochs=100) for _ in range(2))  # no floor
    assert len(simulate(lean, fixed(1.0, 0.5))) > len(simulate(heavy, fixed(1.0, 0.5, per_epoch=0.05))) > 2


def one_dear_check(nth: int, dear: float, check: float, train: float = 1.0):
    """Costs where the ``nth`` check costs ``dear`` seconds and every other one ``check``."""
    count = [0]

    def costs(epoch, checked):
        if not checked:
            return train, 0.0
        count[0] += 1
        return train, dear if count[0] == nth else check
    return costs


def test_one_dear_check_is_spread_over_the_rest_of_the_run():
    """A check at 15 times the others (30% of the whole budget): paid before the next check, it
    would leave the stopper without one for 30 epochs; spread, the cadence barely moves."""
    schedule = CheckSchedule(budget=0.1, max_gap=0.05, max_epochs=100)  # the floor: 5 epochs
    checked = simulate(schedule, one_dear_check(5, dear=3.0, check=0.2))
    assert max(gaps(checked)) < schedule.gap  # the budget alone keeps the cadence, the floor never acts
    assert schedule.late_since is None and schedule.one_off_seconds >= 3.0 - 0.2
    assert schedule.share() <= 0.1 + 0.2 / schedule.train_seconds  # the promise holds over the run


@pytest.mark.parametrize("dear", [3.3, 0.8])
def test_a_cold_first_check_never_prices_the_next(dear):
    """The issue's runs: a first check at 3.3 s (a fresh virtualenv) or 0.8 s beside 0.04 s ones
    on 0.25 s epochs, 103 epochs. The next check comes within the floor (5 epochs), and so does
    every later one."""
    schedule = CheckSchedule(budget=0.04, max_gap=0.05, max_epochs=103)
    checked = simulate(schedule, one_dear_check(1, dear=dear, check=0.04, train=0.25))
    assert max(gaps(checked)) <= schedule.gap == 5
    assert len(checked) >= 103 // 5  # the latest half holds ten checks: the forecast needs five


def test_the_floor_checks_when_the_budget_cannot_and_says_so_once():
    """GPU-like: epochs of 20 ms, checks of 50 ms. The budget affords a check every 63 epochs;
    the floor (5% of 200 epochs) holds them to every 10, and the run spends more than its budget."""
    schedule = CheckSchedule(budget=0.04, max_gap=0.05, max_epochs=200)
    checked = simulate(schedule, fixed(0.02, 0.05))
    assert max(gaps(checked)) == schedule.gap == 10 and len(checked) >= 20
    assert schedule.late_since is not None and schedule.share() > 0.04
    message = schedule.late_message()
    assert "metrics.budget=0.04" in message and "metrics.every" in message and "metrics.max_gap=0.05" in message


def test_fixed_every_ignores_the_budget_and_the_floor_and_the_state_round_trips():
    schedule = CheckSchedule(budget=0.01, max_gap=0.05, max_epochs=30, every=10)
    assert simulate(schedule, fixed(1.0, 100.0)) == [10, 20, 30] and schedule.late_since is None
    copy = CheckSchedule(budget=0.5, max_gap=0.05, max_epochs=30)
    copy.load_state_dict(schedule.state_dict())
    assert copy.state_dict() == schedule.state_dict() and copy.last_check == 30


def test_a_resumed_schedule_checks_the_epochs_the_uninterrupted_one_does():
    def costs(epoch, checked):  # epochs that vary, a dear check early on: an account with history
        return 1.0 + 0.1 * (epoch % 3), (0.3 if checked else 0.01) + (4.0 if epoch == 3 and checked else 0.0)

    straight = CheckSchedule(budget=0.05, max_gap=0.05, max_epochs=120)
    expected = simulate(straight, costs)
    first = CheckSchedule(budget=0.05, max_gap=0.05, max_epochs=120)  # the same run, killed after epoch 60
    before = simulate(first, costs, last=60)
    resumed = CheckSchedule(budget=0.05, max_gap=0.05, max_epochs=120)  # a new process: its first check is cold again
    resumed.load_state_dict(first.state_dict())
    assert before + simulate(resumed, costs, first=61) == expected
    assert resumed.state_dict() == straight.state_dict()


class Clock:
    """The loop's clock, moved only by the test: epochs, checks and checkpoints cost what it says."""

    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Costs(Callback):
    """Makes the loop's steps cost injected seconds: ``train`` per epoch, ``check(n)`` for the
    n-th check (``on_validation_end`` runs inside the timed check), ``save`` per checkpoint,
    ``start`` for the start of the run."""

    def __init__(self, trainer: Trainer, train=1.0, check=lambda n: 0.1, save=0.0, start=0.0):
        self.clock, self.check, self.start, self.checks = Clock(), check, start, 0
        trainer.clock = self.clock
        step, write = trainer.step.train_epoch, trainer.checkpointing.save

        def train_epoch(epoch):
            logs = step(epoch)
            self.clock.now += train
            return logs

        def save_(trainer_):
            write(trainer_)
            self.clock.now += save

        trainer.step.train_epoch, trainer.checkpointing.save = train_epoch, save_
        trainer.callbacks.append(self)

    def on_train_start(self, trainer):
        self.clock.now += self.start

    def on_validation_end(self, epoch, metrics, samples, check):
        self.checks += 1
        self.clock.now += self.check(self.checks)


def checked_epochs(trainer: Trainer) -> list[int]:
    return [h["epoch"] for h in trainer.history if trainer.monitor in h]


BUDGETED = {"metrics.every": None, "stopping.criteria": ["patience"], "stopping.patience": 1000,
            "train.checkpoint_seconds": 3600, "dataset.n_train": 1000, "train.batch_size": 500}  # 2 steps an epoch


def test_in_the_loop_one_dear_check_leaves_the_next_within_the_floor(tmp_path):
    """One check at 2 s beside 0.15 s ones, on 1 s epochs: paid before the next check it left the
    stopper blind for 20 epochs; now the gap after it stays under the floor (5 epochs)."""
    trainer = make_trainer(tmp_path, {**BUDGETED, "train.max_epochs": 50, "metrics.budget": 0.1,
                                      "metrics.max_gap": 0.1})
    Costs(trainer, train=1.0, check=lambda n: 2.0 if n == 4 else 0.15)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the budget alone kept the cadence: no warning
        result = trainer.fit()
    checked = checked_epochs(trainer)
    assert max(gaps(checked)) < trainer.schedule.gap == 5 and result.max_check_gap == max(gaps(checked))
    assert result.cadence_warning is None
    assert result.overhead_share + 0.15 / 50 <= 0.1  # the test scores (a check) at the end included


def test_a_start_dearer_than_the_whole_budget_leaves_checks_on_the_floor(tmp_path):
    """The start (params, recipe) costs 40 s beside 20 epochs of 1 s: it cannot be paid, so the
    floor calls every check; the stopper still counts in epochs."""
    trainer = make_trainer(tmp_path, {**BUDGETED, "train.max_epochs": 20, "metrics.budget": 0.05,
                                      "metrics.max_gap": 0.25})
    Costs(trainer, start=40.0)
    with pytest.warns(UserWarning, match="metrics.budget=0.05") as caught:
        result = trainer.fit()
    assert len(caught) == 1
    assert checked_epochs(trainer) == [1, 6, 11, 16, 20]  # the floor, from the first check on
    assert [h["epoch"] for h in result.history] == list(range(1, 21))  # every epoch's losses, checks or not
    assert result.max_check_gap == 5 and result.overhead_share > 2.0  # what the run really spent, reported


def test_checkpoints_after_every_epoch_leave_checks_every_5_percent_of_the_budget(tracking, tmp_path):
    """``train.checkpoint_seconds: 0`` with checkpoints at 0.3 s on 1 s epochs spend more than a
    4% budget by themselves; checks still come every 5% of ``train.max_epochs``, and the run's
    MLflow record says why it cost more (a tag, once) and its largest gap (a final metric)."""
    recipe = rc.load(RING, tiny("ring8", **{**BUDGETED, "train.max_epochs": 40, "train.checkpoint_seconds": 0}))
    prepared = runner.prepare(recipe)
    with mlflow.start_run() as run:
        trainer = Trainer(recipe, prepared.data, prepared.scorer, tmp_path / "ckpt",
                          [MlflowLogger(run.info.run_id, recipe)], progress=False)
        Costs(trainer, train=1.0, check=lambda n: 0.05, save=0.3)
        with pytest.warns(UserWarning, match="metrics.every") as caught:
            trainer.fit()
    assert len(caught) == 1
    checked = checked_epochs(trainer)
    assert max(gaps(checked)) <= 2 == trainer.schedule.gap and len(checked) >= 20
    data = MlflowClient().get_run(run.info.run_id).data
    assert data.metrics["max_check_gap"] == max(gaps(checked))
    assert "metrics.budget=0.04" in data.tags[TAG_CADENCE_WARNING] and data.metrics["overhead_share"] > 0.3


class KilledAfter(Callback):
    def __init__(self, epoch):
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs):
        if epoch == self.epoch:
            raise KeyboardInterrupt  # before the epoch's checkpoint: checkpointing runs last


def test_a_resumed_run_keeps_its_schedule(tmp_path):
    """Killed at epoch 10 (resumed from 9's checkpoint, written with 9's account in it), a dear
    check before: the resumed run checks the epochs the uninterrupted one does. Costs are powers
    of two, so the two accounts agree to the bit."""
    settings = {**BUDGETED, "train.max_epochs": 20, "metrics.budget": 0.15, "metrics.max_gap": 0.25,
                "train.checkpoint_seconds": 0}
    straight = make_trainer(tmp_path / "a", settings)
    Costs(straight, check=lambda n: 1.0 if n == 2 else 0.125)
    straight.fit()
    killed = make_trainer(tmp_path / "b", settings, [KilledAfter(10)])
    Costs(killed, check=lambda n: 1.0 if n == 2 else 0.125)
    with pytest.raises(KeyboardInterrupt):
        killed.fit()
    resumed = make_trainer(tmp_path / "b", settings)
    assert resumed.resume() and resumed.epoch == 9
    Costs(resumed, check=lambda n: 0.125)
    resumed.fit()
    assert checked_epochs(resumed) == checked_epochs(straight) and len(checked_epochs(straight)) > 6
    assert resumed.schedule.state_dict() == straight.schedule.state_dict()
