"""MLflow run-context provider: tag every run with what produced it (package, torch, GPU).

Registered through the ``mlflow.run_context_provider`` entry point, so MLflow applies it to
any run started where ganstop is installed, not only to ganstop's own runs.
"""

from __future__ import annotations

from mlflow.tracking.context.abstract_context import RunContextProvider


class GanstopRunContext(RunContextProvider):
    def in_context(self) -> bool:
        return True

    def tags(self) -> dict[str, str]:
        import torch  # here, not at import: MLflow loads providers whenever it starts

        from ganstop import __version__

        return {"ganstop.version": __version__, "ganstop.torch_version": torch.__version__,
                "ganstop.cuda_version": torch.version.cuda or "none", "ganstop.gpu": gpu_name()}


def gpu_name() -> str:
    """The GPU's name where this process has initialised CUDA already, else a count of them.

    Naming a GPU initialises CUDA, and this provider runs in every MLflow run on the machine:
    a data loader or an Optuna worker that forks afterwards would then fail with "Cannot
    re-initialize CUDA in forked subprocess". ``device_count`` asks NVML and initialises nothing.
    """
    import torch

    if torch.cuda.is_initialized():
        return torch.cuda.get_device_name(torch.cuda.current_device())
    count = torch.cuda.device_count()
    return f"{count} CUDA device(s), not initialised" if count else "cpu"
