"""Data parallel: samples/s and validation seconds for 1 and N processes at the same global batch.

Both are the same `ganstop train` command (``--nproc 1`` and ``--nproc N``), interleaved, on the
same recipe and global batch, the stopper off so both train every epoch of the budget; each
run's per-epoch ``samples_per_second`` and ``validation_seconds`` are read back from MLflow and
their medians compared. Goal on a GPU machine: N GPUs at >= 0.9 x N the samples/s of one.
On a CPU machine with fewer cores than N x torch's threads the processes share the cores, and
what this shows is the cost of the collectives, not a speed-up.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import uuid

from _report import ROOT, scratch_tracking, write


def run(recipe: str, nproc: int, epochs: int, batch: int, device: str) -> dict[str, float]:
    """One run; the medians of its per-epoch throughput and of its checks' seconds."""
    from mlflow.tracking import MlflowClient

    name = f"scaling-{nproc}-{uuid.uuid4().hex[:8]}"
    command = [sys.executable, "-m", "ganstop", "train", "--recipe", recipe, "--max-epochs", str(epochs),
               "--device", device, "--nproc", str(nproc), "--run-name", name, "--no-progress",
               "--set", f"train.batch_size={batch}", "--set", "stopping.criteria=[patience]",
               "--set", "stopping.patience=1000000", "--set", "metrics.every=1"]
    subprocess.run(command, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
    client = MlflowClient()
    (found,) = client.search_runs([os.environ["MLFLOW_EXPERIMENT_ID"]], f"attributes.run_name = '{name}'")
    history = {key: [m.value for m in client.get_metric_history(found.info.run_id, key)]
               for key in ("samples_per_second", "validation_seconds")}
    return {key: statistics.median(values[1:] or values) for key, values in history.items()}  # epoch 1 warms up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--recipe", default="digits-dcgan")
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=128, help="the global batch, the same for both")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (one GPU per process)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="1 repeat of 4 epochs")
    args = parser.parse_args()
    if args.quick:
        args.repeats, args.epochs = 1, 4
    scratch_tracking()
    one, many = [], []
    for _ in range(args.repeats):  # interleaved, so drift hits both alike
        one.append(run(args.recipe, 1, args.epochs, args.batch, args.device))
        many.append(run(args.recipe, args.nproc, args.epochs, args.batch, args.device))
    med = lambda runs, key: statistics.median(r[key] for r in runs)  # noqa: E731
    speedup = med(many, "samples_per_second") / med(one, "samples_per_second")
    lines = [f"{args.recipe} on {args.device}, global batch {args.batch}, {args.epochs} epochs, {args.repeats} "
             "interleaved repeats; medians over epochs 2 on.", "",
             "| processes | samples/s | validation seconds per check |", "| --- | --- | --- |",
             f"| 1 | {med(one, 'samples_per_second'):.0f} | {med(one, 'validation_seconds'):.3f} |",
             f"| {args.nproc} | {med(many, 'samples_per_second'):.0f} | {med(many, 'validation_seconds'):.3f} |", "",
             f"Speed-up {speedup:.2f}x on {args.nproc} processes: {speedup / args.nproc:.2f} of linear.", ""]
    print("\n".join(lines))
    print(write("Data-parallel scaling", lines, {
        "nproc": args.nproc, "speedup": speedup, "linear_share": speedup / args.nproc,
        "validation_ratio": med(many, "validation_seconds") / med(one, "validation_seconds")}))


if __name__ == "__main__":
    main()
