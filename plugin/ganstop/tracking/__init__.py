"""One tracked run in MLflow: the store, the run that wraps training, the logger callback, the
run-context provider, the evaluator, generation from a logged model, plots, and ``--nproc``.

Knows MLflow, never Optuna. Imports nothing at package level: MLflow loads ``context`` in
every run, which must not pay for torch.
"""
