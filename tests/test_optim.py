import math

import pytest
import torch
from torch import nn

from ganstop.training import optim


def lrs(kind: str, final: float = 0.1, epochs: int = 20, step_every: int = 5) -> list[float]:
    opt = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=1.0)
    sched = optim.scheduler(opt, kind, final, epochs, step_every)
    out = []
    for _ in range(epochs + 1):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_none_keeps_the_lr():
    assert lrs("none") == [1.0] * 21


def test_linear():
    got = lrs("linear")
    assert got == pytest.approx([1 - 0.9 * e / 20 for e in range(21)])


def test_exponential():
    got = lrs("exponential")
    assert got == pytest.approx([0.1 ** (e / 20) for e in range(21)])


def test_step():
    got = lrs("step")
    gamma = 0.1 ** (1 / 4)
    assert got == pytest.approx([gamma ** (e // 5) for e in range(21)])


def test_cosine():
    got = lrs("cosine")
    assert got == pytest.approx([0.1 + 0.9 * (1 + math.cos(math.pi * e / 20)) / 2 for e in range(21)])


@pytest.mark.parametrize("kind", ["linear", "exponential", "step", "cosine"])
def test_every_schedule_ends_at_final_lr(kind):
    assert lrs(kind, final=0.05)[-1] == pytest.approx(0.05)


@pytest.mark.parametrize("kind", ["linear", "exponential", "step", "cosine"])
def test_the_annealed_epoch_is_where_the_lr_has_made_its_share_of_the_decay(kind):
    from ganstop.recipe import DecayConfig

    got = lrs(kind, final=0.001, epochs=100, step_every=10)  # got[e]: the LR after e epochs
    epoch = optim.annealed_epoch(DecayConfig(g_schedule=kind, g_final_lr=0.001), 100)
    bar = 0.001 ** optim.ANNEALED  # a quarter of the way from 1 to 1/1000 on a log scale
    assert got[epoch] <= bar * (1 + 1e-9) < got[epoch - 1]


def test_the_annealed_epoch_waits_for_the_slower_of_the_two_schedules_and_is_none_without_decay():
    from ganstop.recipe import DecayConfig

    fast, slow = DecayConfig(g_schedule="exponential", g_final_lr=0.001), DecayConfig(d_schedule="cosine", d_final_lr=0.001)
    both = DecayConfig(g_schedule="exponential", g_final_lr=0.001, d_schedule="cosine", d_final_lr=0.001)
    assert optim.annealed_epoch(fast, 100) < optim.annealed_epoch(slow, 100) == optim.annealed_epoch(both, 100)
    assert optim.annealed_epoch(DecayConfig(), 100) is None  # no schedule: the LR never anneals
    assert optim.annealed_epoch(DecayConfig(g_schedule="cosine", g_final_lr=1.0), 100) is None  # decays to itself


def test_ema_weights_differ_from_raw_and_lag_behind():
    net = nn.Linear(3, 3)
    ema = optim.ema(net, decay=0.9)
    start = net.weight.detach().clone()
    for _ in range(5):
        with torch.no_grad():
            net.weight.add_(1.0)
        ema.update_parameters(net)
    averaged = ema.module.weight.detach()
    assert not torch.allclose(averaged, net.weight)
    assert torch.all(averaged > start) and torch.all(averaged < net.weight)


def test_weight_penalty_counts_weights_not_biases():
    net = nn.Linear(2, 2)
    with torch.no_grad():
        net.weight.fill_(-2.0)
        net.bias.fill_(100.0)
    assert optim.weight_penalty(net, "l1").item() == pytest.approx(8.0)
    assert optim.weight_penalty(net, "l2").item() == pytest.approx(16.0)


def test_weight_decay_shrinks_weights_without_gradient():
    net = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        net.weight.fill_(1.0)
    opt = optim.optimizer(net, lr=0.1, betas=(0.5, 0.999), weight_decay=0.5)
    net.weight.grad = torch.zeros_like(net.weight)
    opt.step()
    assert torch.allclose(net.weight, torch.full((2, 2), 1 - 0.1 * 0.5))


def test_ema_decay_ramps_up_to_the_configured_value():
    ramp = [float(optim.ema_decay(0.999, torch.tensor(n))) for n in (0, 10, 90, 10_000)]
    assert ramp[:3] == pytest.approx([0.1, 0.55, 0.91]) and ramp[3] == pytest.approx(0.999)


def test_ema_follows_a_moving_model_early_instead_of_sticking_to_the_start():
    net = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        net.weight.fill_(0.0)
    ema = optim.ema(net, decay=0.999)
    for _ in range(50):
        with torch.no_grad():
            net.weight.fill_(1.0)
        ema.update_parameters(net)
    assert ema.module.weight.item() > 0.9  # a fixed 0.999 would still be near 0.05
