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

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"
        return {"ganstop.version": __version__, "ganstop.torch_version": torch.__version__,
                "ganstop.cuda_version": torch.version.cuda or "none", "ganstop.gpu": gpu}
