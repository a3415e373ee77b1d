"""Ctrl-C lands at a batch boundary, never inside a callback's write (``training.interrupt``)."""

import signal

import pytest
import torch

from conftest import ROOT, tiny
from ganstop import recipe as rc
from ganstop.data.sets import load_data
from ganstop.metrics.scorer import Scorer
from ganstop.training import interrupt
from ganstop.training.callbacks import Callback
from ganstop.training.loop import Trainer


@pytest.fixture
def python_sigint():
    """SIGINT as an interactive Python has it (a CI job started in the background inherits it
    ignored), and back as it was afterwards."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class CtrlCDuringWrite(Callback):
    """A Ctrl-C that arrives while the callback writes (a report to the study's storage, a metric
    to the tracking store); ``written`` says whether the write ran to its end."""

    def __init__(self, epoch: int):
        self.epoch, self.written = epoch, []

    def on_validation_end(self, epoch, metrics, samples, check):
        if epoch == self.epoch:
            signal.raise_signal(signal.SIGINT)  # runs the Python handler before it returns
            self.written.append(epoch)


def test_a_ctrl_c_during_a_callbacks_write_stops_the_run_at_the_next_batch(tmp_path, python_sigint, capsys):
    overrides = tiny("ring8", **{"train.max_epochs": 6, "stopping.patience": 10})
    recipe = rc.load(ROOT / "recipes" / "ring8-mlp.yaml", overrides)
    data = load_data(recipe)
    trainer = Trainer(recipe, data, Scorer(recipe, data, torch.device("cpu")), tmp_path, progress=False)
    ctrl_c = CtrlCDuringWrite(epoch=2)
    trainer.callbacks.append(ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit()
    assert ctrl_c.written == [2]  # the write the Ctrl-C landed in finished
    assert [h["epoch"] for h in trainer.history] == [1, 2]  # and epoch 3 stopped at its first batch
    assert trainer.checkpointing.last_path.exists()  # epoch 2's callbacks all ran, checkpointing last
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    assert "stopping at the next batch" in capsys.readouterr().err


def test_a_second_ctrl_c_stops_at_once(python_sigint):
    with interrupt.held():
        signal.raise_signal(signal.SIGINT)  # held
        with pytest.raises(KeyboardInterrupt):
            signal.raise_signal(signal.SIGINT)
        interrupt.check()  # the first one was raised by the second: nothing is left held


def test_a_held_ctrl_c_nobody_checked_is_raised_at_the_end_in_place_of_any_other_error(python_sigint):
    with pytest.raises(KeyboardInterrupt) as raised:
        with interrupt.held():
            signal.raise_signal(signal.SIGINT)
            raise ValueError("a trial pruned as the user pressed Ctrl-C")
    assert isinstance(raised.value.__context__, ValueError)
    interrupt.check()  # nothing held after the block
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_or_own_sigint_handler_is_left_alone(python_sigint):
    calls = []
    for handler in (signal.SIG_IGN, lambda signum, frame: calls.append(signum)):
        signal.signal(signal.SIGINT, handler)
        with interrupt.held():
            assert signal.getsignal(signal.SIGINT) is handler
            signal.raise_signal(signal.SIGINT)
            interrupt.check()
    assert calls == [signal.SIGINT]
