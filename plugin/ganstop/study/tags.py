"""Where a study and its MLflow runs meet: trial attributes and run tags every module of the study reads."""

PARENT_ATTR = "mlflow_parent_run_id"
RUN_ATTR = "mlflow_run_id"
TAG_STUDY, TAG_TRIAL, TAG_STATE, TAG_ROLE = "ganstop.study", "ganstop.trial", "ganstop.trial_state", "ganstop.role"
TAG_PRUNED_EPOCH, TAG_ERROR, TAG_PARENT = "ganstop.pruned_epoch", "ganstop.error", "mlflow.parentRunId"
