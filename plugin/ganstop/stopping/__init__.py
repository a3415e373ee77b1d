"""When to stop one run: the criteria and ``EarlyStopper`` that composes them, the forecast of
what the rest of the budget can gain, and the replay that drives them over recorded curves.

Plain numbers in, decisions out: numpy and scipy (torch only to read the curve model's
weights; no MLflow or Optuna), so the trainer, a user's own loop, the study and the benchmarks
all drive the same objects. A new criterion goes in ``criteria.py``.
"""
