"""When the loop spends time on anything but training.

A fixed "validate every N epochs" costs a different share on every machine: on a GPU an epoch
of a small GAN takes less than the fixed cost of a check, on a CPU the same check is noise.
``CheckSchedule`` holds the share instead (``metrics.budget``): a check is due when all the
time the loop spent besides training (checks, pictures, checkpoints, logging), plus what the
last check cost, stays within ``budget`` x the time spent training. Its state rides in the
checkpoint, so a resumed run keeps the account it had.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass
class CheckSchedule:
    """Says after which epochs to validate: by budget, or every ``every`` epochs when set;
    always after the last epoch of the budget."""

    budget: float  # metrics.budget
    every: int | None = None
    train_seconds: float = 0.0  # spent in training steps
    other_seconds: float = 0.0  # spent in the loop on everything else
    check_seconds: float = 0.0  # what the latest check cost: the price of the next one

    def due(self, epoch: int, last_epoch: int) -> bool:
        if epoch >= last_epoch:
            return True
        if self.every is not None:
            return epoch % self.every == 0
        return self.other_seconds + self.check_seconds <= self.budget * self.train_seconds

    def spent(self, train: float, other: float, checked: bool) -> None:
        """Account one epoch: its training time and the rest of its loop time (with its check)."""
        self.train_seconds += train
        self.other_seconds += other
        if checked:
            self.check_seconds = other

    def share(self) -> float:
        """The share of training time the loop has spent on everything else so far."""
        return self.other_seconds / self.train_seconds if self.train_seconds else 0.0

    def state_dict(self) -> dict:
        return {k: v for k, v in dataclasses.asdict(self).items() if k.endswith("_seconds")}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
