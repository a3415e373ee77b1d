"""When the loop spends time on anything but training.

A fixed "validate every N epochs" costs a different share on every machine: on a GPU an epoch
of a small GAN takes less than the fixed cost of a check, on a CPU the same check is noise.
``CheckSchedule`` holds the share instead (``metrics.budget``): a check is due when the time the
loop has charged for everything besides training (checks, pictures, checkpoints, logging), plus
the price of one more check, stays within ``budget`` x the time spent training. The end of the
run is paid for as it comes nearer: the forced check after the last epoch and the test split's
scores, two checks at the current price, are charged ``epoch / max_epochs`` of their cost by epoch
``epoch``, so the budget holds over the run with its end, not only up to it.

Three things keep one slow moment from hiding the rest of the run from the stopper:

- The price of the next check is the (lower) median of the latest ``RECENT`` checks, not the
  latest one: one dear check among few does not set it.
  Before a process has one warm check to go by, its cold first check is the price, at most what
  the budget earns over the floor's gap: a cold check says little about the next one.
- One-off costs are spread over the rest of the budget instead of being repaid before the next
  check: the start of the run (params, recipe), a process's first check (cold caches, the first
  picture, ``torch.compile``), and any epoch that costs more than ``ONE_OFF`` times the dearest
  of the latest ``RECENT`` of its kind (a busy node, a checkpoint on the clock, a tracking store
  that stalls). What such an epoch cost above the median of its kind is charged evenly over the
  epochs left, so all of it is charged by the last epoch and the budget holds over the run.
- A floor (``metrics.max_gap``): a check at least every ``max_gap`` x ``train.max_epochs``
  epochs, whatever the account says. When the floor calls a check that the budget would have
  put off by more than another gap, the run spends more than its budget: ``late_since`` keeps
  the first such epoch, for the warning.

Its state rides in the checkpoint, so a resumed run keeps the account it had.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

END_CHECKS = 2  # what ends a run, in checks: the forced check after the last epoch and the test split's scores
RECENT = 5  # the price is the lower median of this many latest checks; one in metrics.grid_every (5) draws a picture
ONE_OFF = 2.0  # an epoch dearer than this many times the dearest of the latest RECENT of its kind is a one-off


@dataclass
class CheckSchedule:
    """Says after which epochs to validate: by budget with a floor, or every ``every`` epochs
    when set; always after the last epoch of the budget."""

    budget: float  # metrics.budget
    max_gap: float  # metrics.max_gap, a share of max_epochs
    max_epochs: int  # train.max_epochs
    every: int | None = None  # metrics.every: a fixed cadence, budget and floor aside
    train_seconds: float = 0.0  # spent in training steps
    other_seconds: float = 0.0  # spent in the loop on everything else, one-offs included
    deferred_seconds: float = 0.0  # the part of the one-offs not charged to the account yet
    one_off_seconds: float = 0.0  # all the one-offs so far
    checks: list[float] = field(default_factory=list)  # the latest checks' costs (a process's first left out)
    epochs: list[float] = field(default_factory=list)  # the latest other epochs' costs
    last_check: int = 0  # the epoch of the latest check (0: none yet)
    late_since: int | None = None  # the first check the floor called when the budget would have waited
    cold: float | None = field(default=None, repr=False)  # this process's first check's cost (not in the state)

    @property
    def gap(self) -> int:
        """The floor: the most epochs from one check to the next."""
        return max(1, int(self.max_gap * self.max_epochs))

    def price(self, epoch: int, trained: float) -> float:
        """What a check after epoch ``epoch`` would cost, ``trained`` seconds of training in; nothing
        before any check (the first one measures it)."""
        if self.checks:
            return statistics.median_low(self.checks)
        return 0.0 if self.cold is None else min(self.cold, self._gap_income(epoch, trained))

    def _gap_income(self, epoch: int, trained: float) -> float:
        """What the budget earns over the floor's gap, at the mean epoch so far."""
        return self.budget * self.gap * trained / epoch

    def charged(self) -> float:
        """What the account has charged so far: everything besides training but the one-offs' rest."""
        return self.other_seconds - self.deferred_seconds

    def due(self, epoch: int, train: float) -> bool:
        """Whether to check after epoch ``epoch``, whose training took ``train`` seconds."""
        if epoch >= self.max_epochs:
            return True
        if self.every is not None:
            return epoch % self.every == 0
        trained = self.train_seconds + train
        price = self.price(epoch, trained)
        reserved = END_CHECKS * price * epoch / self.max_epochs  # the end of the run, charged as it comes
        owed = self.charged() + price + reserved - self.budget * trained  # what a check now overdraws
        if owed <= 0:
            return True
        if epoch - self.last_check < self.gap:
            return False
        if owed > self._gap_income(epoch, trained) and self.late_since is None:
            self.late_since = epoch  # the budget would wait another gap and more: it cannot pay for the floor
        return True

    def started(self, seconds: float) -> None:
        """Account the start of a process's run (params, recipe): a one-off."""
        self.other_seconds += seconds
        self._defer(seconds)

    def spent(self, epoch: int, train: float, other: float, checked: bool) -> None:
        """Account one epoch: its training time and the rest of its loop time (with its check)."""
        self.train_seconds += train
        self.other_seconds += other
        # what was deferred is charged evenly over the epochs left, this one included
        self.deferred_seconds -= self.deferred_seconds / max(1, self.max_epochs - epoch + 1)
        recent = self.checks if checked else self.epochs
        cold = checked and self.cold is None
        if cold or (recent and other > ONE_OFF * max(recent)):
            self._defer(max(0.0, other - (statistics.median_low(recent) if recent else 0.0)))
        if cold:
            self.cold = other
        else:
            recent.append(other)
            del recent[:-RECENT]
        if checked:
            self.last_check = epoch

    def _defer(self, seconds: float) -> None:
        self.deferred_seconds += seconds
        self.one_off_seconds += seconds

    def share(self) -> float:
        """The share of training time the loop has spent on everything else so far."""
        return self.other_seconds / self.train_seconds if self.train_seconds else 0.0

    def late_message(self) -> str:
        """Why the run spends more than its budget, for the warning (once ``late_since`` is set)."""
        price = statistics.median_low(self.checks) if self.checks else self.cold or 0.0
        return (f"checks every {self.gap} epochs (metrics.max_gap={self.max_gap:g} of {self.max_epochs} epochs) cost "
                f"more than metrics.budget={self.budget:g} of training time pays for (from epoch {self.late_since}: "
                f"{price:.3g} s a check, {self.one_off_seconds:.3g} s one-off, {self.train_seconds:.3g} s of "
                f"training); the floor keeps them, so the run spends more than its budget besides training: "
                f"raise metrics.budget or metrics.max_gap, or set metrics.every for a fixed cadence")

    _STATE = ("train_seconds", "other_seconds", "deferred_seconds", "one_off_seconds", "checks", "epochs",
              "last_check", "late_since")

    def state_dict(self) -> dict:
        return {key: getattr(self, key) for key in self._STATE}

    def load_state_dict(self, state: dict) -> None:
        for key in self._STATE:
            if key in state:  # a checkpoint from before one-offs and the floor: the rest stays as new
                setattr(self, key, state[key])
        self.checks, self.epochs = list(self.checks), list(self.epochs)
