"""Scoring a logged generator against reference data, as an MLflow model scorer (`gan`).

``score`` is the one code path: ``mlflow.models.evaluate(..., model_type="gan",
evaluators=["gan"])`` calls it through ``GanEvaluator``, and promotion calls it directly for
candidate and champion with the same reference, metric, sample count and latent seed.
"""

from __future__ import annotations

import numpy as np
import torch
from mlflow.models.evaluation import EvaluationResult, ModelEvaluator
from mlflow.tracking import MlflowClient

from ganstop import recipe as rc
from ganstop.data.sets import Data, load_data
from ganstop.metrics.scorer import Scorer


def input_dim(model) -> int:
    """z_dim from the pyfunc signature: the models ganstop logs take (n, z_dim) float32."""
    inputs = model.metadata.get_input_schema()
    if inputs is None or not inputs.is_tensor_spec():
        raise rc.RecipeError("the model has no tensor input signature; was it logged by ganstop?")
    return int(inputs.inputs[0].shape[-1])


def sample(model, n: int, seed: int) -> np.ndarray:
    """n samples from seeded standard-normal latents (the same latents for every model)."""
    z = np.random.default_rng(seed).standard_normal((n, input_dim(model))).astype(np.float32)
    return np.asarray(model.predict(z), dtype=np.float32)


def score(model, recipe: rc.Recipe, data: Data, n_samples: int | None = None, seed: int = 0) -> dict[str, float]:
    """Every metric of the recipe for ``model``'s samples against ``data``'s held-out split."""
    scorer = Scorer(recipe, data, torch.device("cpu"))
    n = n_samples or scorer.n_samples
    samples = torch.from_numpy(sample(model, n, seed))
    if tuple(samples.shape[1:]) != data.sample_shape:
        raise rc.RecipeError(f"the model generates samples of shape {tuple(samples.shape[1:])}, "
                             f"but the reference data has {data.sample_shape}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return scorer(samples)


class GanEvaluator(ModelEvaluator):
    """`mlflow.models.evaluate(model, data, model_type="gan", evaluators=["gan"],
    evaluator_config={"gan": {"recipe": <recipe dict or path>, "n_samples": N, "seed": S}})`.

    ``data`` holds the reference samples, one flattened sample per row; the recipe names the
    dataset (for its feature classifier) and the metrics.
    """

    @classmethod
    def can_evaluate(cls, *, model_type, evaluator_config, **kwargs) -> bool:
        return model_type == "gan"

    def evaluate(self, *, model_type, dataset, run_id, evaluator_config, model=None, **kwargs) -> EvaluationResult:
        config = dict(evaluator_config or {})
        source = config.get("recipe") or "digits-dcgan"
        recipe = rc.load(source) if isinstance(source, str) else rc.from_dict(source)
        data = load_data(recipe)
        reference = torch.as_tensor(np.asarray(dataset.features_data, dtype=np.float32)).reshape(-1, *data.sample_shape)
        data.val = reference * 2 - 1 if data.kind == "image" else reference
        if data.kind == "image" and dataset.labels_data is not None:
            data.val_labels = torch.as_tensor(np.asarray(dataset.labels_data)).long()
        metrics = score(model, recipe, data, config.get("n_samples"), config.get("seed", 0))
        client = MlflowClient()
        for key, value in metrics.items():
            client.log_metric(run_id, key, value)
        return EvaluationResult(metrics=metrics, artifacts={})

