"""What the loop does besides training, and when: checks by a share of training time,
full checkpoints by the clock, pictures on news."""

import time

import pytest
import torch

from conftest import tiny
from ganstop import recipe as rc
from ganstop.training.cadence import CheckSchedule
from test_train import RING, Recorder, make_trainer


def simulate(schedule: CheckSchedule, epochs: int, train: float, check: float, per_epoch: float = 0.0) -> list[int]:
    """Drive the schedule with fixed costs; the epochs it checked."""
    checked = []
    for epoch in range(1, epochs + 1):
        due = schedule.due(epoch, epochs)
        schedule.spent(train, per_epoch + (check if due else 0.0), due)
        checked += [epoch] if due else []
    return checked


@pytest.mark.parametrize("train, check", [(1.0, 0.5), (0.05, 0.4), (10.0, 0.2), (1.0, 0.05)])
def test_the_budget_holds_however_fast_the_epoch_is(train, check):
    schedule = CheckSchedule(budget=0.05)
    checked = simulate(schedule, 2000, train, check)
    assert checked[0] == 1 and checked[-1] == 2000  # nothing spent yet: the first check measures the price
    assert schedule.other_seconds <= 0.05 * schedule.train_seconds + check  # one check over, at most
    spaced = max(1, round(check / (0.05 * train)))  # what the budget affords
    gaps = {b - a for a, b in zip(checked[1:-2], checked[2:-1])}
    assert gaps and max(gaps) - min(gaps) <= 1 and abs(min(gaps) - spaced) <= 1


def test_time_spent_besides_checks_leaves_less_for_checks():
    lean, heavy = CheckSchedule(budget=0.1), CheckSchedule(budget=0.1)
    assert len(simulate(lean, 100, 1.0, 0.5)) > len(simulate(heavy, 100, 1.0, 0.5, per_epoch=0.05)) > 2


def test_fixed_every_ignores_the_budget_and_the_state_round_trips():
    schedule = CheckSchedule(budget=0.01, every=3)
    assert simulate(schedule, 10, 1.0, 100.0) == [3, 6, 9, 10]
    copy = CheckSchedule(budget=0.5)
    copy.load_state_dict(schedule.state_dict())
    assert (copy.train_seconds, copy.other_seconds, copy.check_seconds) == (10.0, 400.0, 100.0)


class SlowStart(Recorder):
    """A start (params, recipe) that costs 2 s: far above 5% of six tiny epochs' training."""

    def on_train_start(self, trainer):
        super().on_train_start(trainer)
        time.sleep(2.0)


def test_the_budget_pays_for_the_start_and_the_stopper_still_counts_in_epochs(tmp_path):
    recorder = SlowStart()
    trainer = make_trainer(tmp_path, {"train.max_epochs": 6, "metrics.every": None, "metrics.budget": 0.05,
                                      "stopping.patience": 100}, [recorder])
    result = trainer.fit()
    # six tiny epochs train in well under the 40 s whose 5% would pay for the start: only the last check
    assert [e[1] for e in recorder.events if e[0] == "validation"] == [6]
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4, 5, 6]  # every epoch's losses, checks or not
    assert [h["epoch"] for h in result.history if trainer.monitor in h] == [6]
    assert result.stopped_epoch == 6 and result.best_epoch == 6
    assert result.overhead_share > 0.05  # what the run really spent besides training, reported


def test_pictures_on_the_first_check_every_new_best_every_nth_check_and_the_last(tmp_path):
    recorder = Recorder()
    trainer = make_trainer(tmp_path, {"train.max_epochs": 9, "metrics.grid_every": 4, "stopping.patience": 100,
                                      "stopping.criteria": ["patience"],
                                      "stopping.warmup": 0}, [recorder])
    trainer.fit()
    drawn = {e[1] for e in recorder.events if e[0] == "validation" and e[3] is not None}
    values = [h[trainer.monitor] for h in trainer.history]
    bests = {i + 1 for i, v in enumerate(values) if v < min(values[:i], default=float("inf"))}
    assert drawn == bests | {1, 4, 8, 9}


class Snapshot(Recorder):
    """What is on disk when a user's callback sees the end of each epoch."""

    def __init__(self, folder):
        super().__init__()
        self.folder, self.on_disk = folder, []

    def on_epoch_end(self, epoch, logs):
        self.on_disk.append(sorted(p.name for p in self.folder.glob("*.pt")))


def test_checkpoints_follow_the_clock_and_the_best_waits_for_the_next_one(tmp_path):
    rare = Snapshot(tmp_path / "rare" / "ckpt")
    trainer = make_trainer(tmp_path / "rare", {"train.max_epochs": 4, "train.checkpoint_seconds": 3600,
                                               "stopping.patience": 100}, [rare])
    result = trainer.fit()
    assert rare.on_disk == [[]] * 4  # an hour never passed: nothing written during training
    assert sorted(p.name for p in trainer.checkpoint_dir.glob("*.pt")) == ["best.pt", "last.pt"]  # at the end
    assert torch.load(trainer.checkpointing.last_path, weights_only=True)["epoch"] == 4
    assert torch.load(trainer.checkpointing.best_path, weights_only=True)["epoch"] == result.best_epoch

    every = Snapshot(tmp_path / "every" / "ckpt")
    make_trainer(tmp_path / "every", {"train.max_epochs": 4, "train.checkpoint_seconds": 0,
                                      "stopping.patience": 100}, [every]).fit()
    # a user's callback runs before the epoch's checkpoint: it sees the previous epoch's files
    assert every.on_disk[:3] == [[], ["last.pt"], ["best.pt", "last.pt"]]  # epoch 1 is warm-up: no best yet


@pytest.mark.parametrize("override, message", [
    (("metrics.budget", 0), "metrics.budget must be a share of training time in (0, 1]"),
    (("metrics.budget", 1.5), "metrics.budget must be a share of training time in (0, 1]"),
    (("metrics.every", 0), "metrics.every must be >= 1 epoch, or empty"),
    (("train.checkpoint_seconds", -1), "train.checkpoint_seconds must be >= 0"),
    (("metrics.grid_every", 0), "metrics.grid_every must be > 0"),
])
def test_bad_cadence_settings_are_refused(override, message):
    with pytest.raises(rc.RecipeError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        rc.load(RING, [*tiny("ring8"), override])
