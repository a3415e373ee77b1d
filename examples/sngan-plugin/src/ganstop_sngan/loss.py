"""``lsgan``: the least-squares objective (Mao et al. 2017): D regresses real to 1 and fake to 0,
G pulls its samples' scores to 1. Gradients do not vanish for samples D is sure about."""

from ganstop.plugins import Objective

lsgan = Objective(
    discriminator=lambda real, fake: 0.5 * ((real - 1).square().mean() + fake.square().mean()),
    generator=lambda fake: 0.5 * (fake - 1).square().mean(),
)
