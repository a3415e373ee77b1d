"""Optuna studies: the search space, pruners, storage, the objective that runs one trial as a
nested MLflow run, the study runner and report, promotion of a study's best trial, and the
replay search over logged curves. A new pruner goes in ``pruners.py``.
"""
