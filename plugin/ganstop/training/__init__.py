"""One GAN training: the loop, the GAN step, callbacks, checkpoints, the check cadence,
optimisers and schedules, losses, model families, data parallelism.

Knows neither MLflow nor Optuna: those watch a run through ``callbacks.Callback``. A new model
family or loss registers as a plugin (``ganstop.plugins``), or goes in ``models.py``/``losses.py``.
"""
