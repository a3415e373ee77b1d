"""What the study's parent run shows: best trial, trials table, Optuna plots, a Pareto plot."""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from mlflow.entities import Metric  # noqa: E402
from mlflow.tracking import MlflowClient  # noqa: E402

from ganstop.study.tags import RUN_ATTR# noqa: E402
from ganstop.stopping.criteria import better# noqa: E402

State = optuna.trial.TrialState


def counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {
        "n_trials": len(trials),
        "n_complete": sum(t.state == State.COMPLETE for t in trials),
        "n_pruned": sum(t.state == State.PRUNED for t in trials),
        "n_failed": sum(t.state == State.FAIL for t in trials),
        "total_epochs": sum(t.user_attrs.get("epochs") or 0 for t in trials),
    }


def pareto_figure(study: optuna.Study, metric: str, mode: str):
    """Best metric vs epochs spent for completed trials, non-dominated ones joined by a line."""
    points = sorted((t.user_attrs["epochs"], t.user_attrs["best_metric"], t.number)
                    for t in study.get_trials(deepcopy=False, states=(State.COMPLETE,)) if "best_metric" in t.user_attrs)
    front, best = [], None
    for epochs, value, number in points:
        if best is None or better(value, best, mode):
            front.append((epochs, value))
            best = value
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter([p[0] for p in points], [p[1] for p in points], label="completed trials")
    for epochs, value, number in points:
        ax.annotate(str(number), (epochs, value), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if front:
        ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="red", label="Pareto front")
    ax.set_xlabel("epochs spent")
    ax.set_ylabel(f"best {metric}")
    ax.set_title("quality vs compute")
    ax.legend(fontsize=7)
    return fig


def _optuna_figures(study: optuna.Study) -> dict[str, object]:
    from optuna.visualization import matplotlib as ovm

    makers = {"optimization_history.png": ovm.plot_optimization_history,
              "intermediate_values.png": ovm.plot_intermediate_values,
              "param_importances.png": ovm.plot_param_importances}
    figures = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # optuna marks its matplotlib backend experimental
        for name, make in makers.items():
            try:
                figures[name] = make(study).figure
            except (ValueError, RuntimeError, ZeroDivisionError):
                pass  # e.g. importances need two completed trials with differing params
    return figures


def publish(study: optuna.Study, parent_run_id: str, metric: str, mode: str, client: MlflowClient | None = None) -> dict:
    """Write the study's current state onto its parent run; returns the counts and best trial."""
    client = client or MlflowClient()
    summary = counts(study)
    now = int(time.time() * 1000)
    client.log_batch(parent_run_id, metrics=[Metric(k, float(v), now, 0) for k, v in summary.items()])
    completed = study.get_trials(deepcopy=False, states=(State.COMPLETE,))
    if completed:
        best = study.best_trial
        summary["best"] = {"number": best.number, "value": best.value, "params": best.params,
                           "run_id": best.user_attrs.get(RUN_ATTR), "epochs": best.user_attrs.get("epochs"),
                           "best_metric": best.user_attrs.get("best_metric")}
        client.log_metric(parent_run_id, "best_value", float(best.value), now)
        for key, value in {"ganstop.best_trial": best.number, "ganstop.best_value": best.value,
                           "ganstop.best_run_id": summary["best"]["run_id"],
                           "ganstop.best_params": json.dumps(best.params)}.items():
            client.set_tag(parent_run_id, key, str(value))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        study.trials_dataframe().to_csv(out / "trials.csv", index=False)
        (out / "best_trial.json").write_text(json.dumps(summary.get("best"), indent=2, default=str))
        figures = _optuna_figures(study)
        if completed:
            figures["pareto.png"] = pareto_figure(study, metric, mode)
        for name, fig in figures.items():
            fig.savefig(out / name, dpi=100, bbox_inches="tight")
            plt.close(fig)
        client.log_artifacts(parent_run_id, str(out), "study")
    return summary
