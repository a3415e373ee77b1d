"""The GAN step: generator and discriminator, their optimizers, LR schedules and EMA, the training
data on the device, and one epoch of alternating updates. The objective and its penalty come
from the ``ganstop.losses`` plugin the recipe names; the loop around the step is ``loop.Trainer``.

Data parallel (torchrun, ``distributed``): G and D are wrapped in DDP, which averages
their gradients over the ranks (no buffer broadcasts, as StyleGAN2-ADA: batch-norm
statistics stay each rank's own unless ``train.sync_batchnorm``). ``train.batch_size`` is the
global batch. Every rank draws the same global permutation and the same global latents from
the same RNG stream and trains on its own slice of each, so N processes at global batch B train
on exactly what one process at batch B does, and no two ranks see the same sample or latent.
What a loss plugin's penalty draws for itself (WGAN-GP's interpolation points) is drawn per rank
instead, so it differs from one process's draws.
"""

from __future__ import annotations

import contextlib
import inspect

import torch
from torch import nn

from ganstop.training import distributed, interrupt, models, optim, sync_batchnorm
from ganstop import plugins
from ganstop.data.sets import Data
from ganstop.training.losses import r1_penalty
from ganstop.recipe import Recipe

GEN_CHUNK = 1024
# DDP leaves each rank's batch-norm statistics alone during training (torch renamed the option in 2.13)
_NO_BUFFER_SYNC = ({"forward_sync_buffers": False}
                   if "forward_sync_buffers" in inspect.signature(nn.parallel.DistributedDataParallel).parameters
                   else {"broadcast_buffers": False})


def bf16_autocast(recipe: Recipe, data: Data, device: torch.device) -> bool:
    """Whether the step trains under bf16 autocast: images, on a GPU with bf16 arithmetic of its
    own (compute capability 8.0, Ampere, on; below that torch only emulates bf16, and fp16 would
    need a GradScaler). bf16 resolves about 0.008 near radius 1, close to the ring's std (0.01):
    2D MLPs stay fp32."""
    return (recipe.train.amp and device.type == "cuda" and data.kind == "image"
            and torch.cuda.get_device_capability(device) >= (8, 0))


class GANStep:
    """Everything one epoch of training touches, and its ``state_dict`` for the checkpoint."""

    def __init__(self, recipe: Recipe, data: Data, device: torch.device):
        self.recipe, self.data, self.device = recipe, data, device
        cuda = device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True  # fixed shapes every step: let cuDNN pick kernels once
        self.amp = bf16_autocast(recipe, data, device)
        self.channels_last = recipe.train.channels_last and cuda and data.kind == "image"
        self.fmt = torch.channels_last if self.channels_last else torch.preserve_format

        torch.manual_seed(recipe.train.seed)
        self.world, self.rank = distributed.world_size(), distributed.rank()
        nets = models.build(recipe, data.sample_shape)
        if self.world > 1 and recipe.train.sync_batchnorm:
            nets = [sync_batchnorm.convert(m, device) for m in nets]
        self.G, self.D = (m.to(device, memory_format=self.fmt) for m in nets)
        tc, dc = recipe.train, recipe.decay
        self.opt_g = optim.optimizer(self.G, tc.lr_g, (tc.beta1, tc.beta2), dc.g_weight_decay)
        self.opt_d = optim.optimizer(self.D, tc.lr_d, (tc.beta1, tc.beta2), dc.d_weight_decay)
        self.sched_g = optim.scheduler(self.opt_g, dc.g_schedule, dc.g_final_lr, tc.max_epochs, dc.step_every)
        self.sched_d = optim.scheduler(self.opt_d, dc.d_schedule, dc.d_final_lr, tc.max_epochs, dc.step_every)
        self.ema = optim.ema(self.G, recipe.ema.decay) if recipe.ema.enabled else None
        self.objective = plugins.load("losses", tc.loss)
        # torch.compile has no double backward (AOTAutograd refuses it): a penalty on D's input
        # gradient (R1, WGAN-GP's) differentiates through D twice, so D then runs eagerly
        double_backward = bool(tc.r1_gamma) or self.objective.penalty is not None
        self.G_step = self._parallel(self.G, tc.compile)
        self.D_step = self._parallel(self.D, tc.compile and not double_backward)

        # Resident on the GPU when it fits in a quarter of free memory (no copies per step);
        # otherwise pinned host memory, gathered into a pinned batch and copied asynchronously.
        self.resident = not cuda or data.train.nbytes < 0.25 * torch.cuda.mem_get_info(device)[0]
        if self.resident:
            self.train_data = data.train.to(device, memory_format=self.fmt) if data.kind == "image" else data.train.to(device)
        else:
            self.train_data = data.train.pin_memory()
            # two pinned buffers: one is gathered into while the other's copy is in flight
            self._buffers = [torch.empty((tc.batch_size, *data.sample_shape)).pin_memory() for _ in range(2)]
            self._copied: list[torch.cuda.Event | None] = [None, None]

    def _parallel(self, module: nn.Module, compiled: bool) -> nn.Module:
        """What the step calls: DDP around the module when there are ranks, compiled on request."""
        if self.world > 1:
            ids = [self.device] if self.device.type == "cuda" else None
            module = nn.parallel.DistributedDataParallel(module, device_ids=ids, **_NO_BUFFER_SYNC)
        return torch.compile(module) if compiled else module

    def state_dict(self) -> dict:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(),
                "ema": self.ema.state_dict() if self.ema else None,
                "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "sched_g": self.sched_g.state_dict(), "sched_d": self.sched_d.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.G.load_state_dict(state["G"])
        self.D.load_state_dict(state["D"])
        if self.ema is not None and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        for name in ("opt_g", "opt_d", "sched_g", "sched_d"):
            getattr(self, name).load_state_dict(state[name])

    def eval_generator(self) -> nn.Module:
        """The weights that are validated and saved: EMA once it has started, else raw G."""
        if self.ema is not None and self.ema.n_averaged.item() > 0:
            return self.ema.module
        return self.G

    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training data: ``d_steps`` D updates per G update, EMA after each G
        update from ``ema.start_epoch`` on, then one LR-schedule step. Mean losses, the LRs used."""
        tc, objective = self.recipe.train, self.objective
        penalty_kind, lam = self.recipe.decay.d_penalty, self.recipe.decay.d_penalty_lambda
        r1 = tc.r1_gamma
        use_ema = self.ema is not None and epoch >= self.recipe.ema.start_epoch
        n, batch = len(self.train_data), min(tc.batch_size, len(self.train_data))  # the global batch
        steps, local = n // batch, batch // self.world
        mine = slice(self.rank * local, (self.rank + 1) * local)  # this rank's slice of every global draw
        order = torch.randperm(n, device=self.device if self.resident else "cpu")
        d_sum = torch.zeros((), device=self.device)
        g_sum = torch.zeros((), device=self.device)
        self.G.train()
        self.D.train()
        autocast = torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp)
        for step in range(steps):
            interrupt.check()  # a held Ctrl-C stops here, between batches
            real = self._real_batch(order[step * batch:(step + 1) * batch][mine], step)
            for _ in range(tc.d_steps):
                z = torch.randn(batch, self.recipe.model.z_dim, device=self.device)[mine]
                real_in = real.detach().requires_grad_() if r1 else real
                with autocast:
                    fake = self.G_step(z)
                    real_logits = self.D_step(real_in)
                    d_loss = objective.discriminator(real_logits, self.D_step(fake.detach()))
                    if objective.penalty is not None:
                        with self._own_randomness():
                            d_loss = d_loss + tc.gp_lambda * objective.penalty(self.D_step, real, fake)
                    if r1:
                        d_loss = d_loss + r1 / 2 * r1_penalty(real_logits, real_in)
                    if penalty_kind != "none":
                        d_loss = d_loss + lam * optim.weight_penalty(self.D, penalty_kind)
                self.opt_d.zero_grad(set_to_none=True)
                d_loss.backward()
                self.opt_d.step()
            with autocast, self._no_sync(self.D_step):  # D's gradients here are dropped: not averaged
                g_loss = objective.generator(self.D_step(fake))
            self.opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            self.opt_g.step()
            if use_ema:
                self.ema.update_parameters(self.G)
            d_sum += d_loss.detach()
            g_sum += g_loss.detach()
        lrs = {"lr_g": self.opt_g.param_groups[0]["lr"], "lr_d": self.opt_d.param_groups[0]["lr"]}
        self.sched_g.step()
        self.sched_d.step()
        means = distributed.all_mean(torch.stack([d_sum, g_sum]).div(steps)).tolist()  # one host sync per epoch
        return {"d_loss": means[0], "g_loss": means[1], **lrs, "samples": float(steps * batch)}

    @contextlib.contextmanager
    def _own_randomness(self):
        """What a loss plugin draws for its penalty (WGAN-GP's interpolation points) differs by
        rank: a seed from the shared stream (which every rank advances alike) plus the rank. One
        process draws from the stream itself, as it always has."""
        if self.world == 1:
            yield
            return
        seed = int(torch.randint(2**62, (1,)))
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed + self.rank)
            yield

    @staticmethod
    def _no_sync(module: nn.Module):
        """DDP's ``no_sync`` where the module is wrapped (compiled or not), else nothing."""
        inner = getattr(module, "_orig_mod", module)
        return inner.no_sync() if isinstance(inner, nn.parallel.DistributedDataParallel) else contextlib.nullcontext()

    def sync_buffers(self) -> None:
        """Rank 0's batch-norm statistics (G's and the EMA's) on every rank before a check, so
        every rank validates the same generator; training in train mode never reads them. The
        EMA's own buffer, its step counter, is a CPU tensor that NCCL cannot send, and every
        rank counts the same steps: only the averaged generator's buffers go."""
        for module in (self.G, self.ema.module if self.ema is not None else None):
            if module is not None:
                distributed.broadcast_buffers(module)

    def _real_batch(self, idx: torch.Tensor, step: int) -> torch.Tensor:
        if self.resident:
            return self.train_data[idx]
        slot = step % 2
        if self._copied[slot] is not None:
            self._copied[slot].synchronize()  # its previous copy must be done before we overwrite it
        host = torch.index_select(self.train_data, 0, idx, out=self._buffers[slot][: len(idx)])
        real = host.to(self.device, non_blocking=True, memory_format=self.fmt)
        self._copied[slot] = torch.cuda.Event()
        # on the stream the copy went to: the current device's is another GPU's when training on cuda:N
        self._copied[slot].record(torch.cuda.current_stream(self.device))
        return real

    @torch.no_grad()
    def generate(self, z: torch.Tensor) -> torch.Tensor:
        """Samples in user units: images in [0, 1], points as coordinates. In fp32, never under
        autocast: the scores must be the ones promotion computes from the fp32 MLflow model."""
        sampler = models.Sampler(self.eval_generator(), self.data.kind == "image").eval()
        return torch.cat([sampler(chunk) for chunk in z.split(GEN_CHUNK)])

    def sampler(self, generator_state: dict) -> nn.Module:
        """A CPU ``Sampler`` of a generator with these weights (the best epoch's, say)."""
        generator, _ = models.build(self.recipe, self.data.sample_shape)
        generator.load_state_dict(generator_state)
        return models.Sampler(generator, self.data.kind == "image").eval()
