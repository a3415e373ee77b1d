"""The public API in a user's own loop: the README's block runs exactly as printed."""

import re

import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient
from torch import nn

from conftest import ROOT
import ganstop
from ganstop.data.sets import mixture_means, sample_mixture


def readme_loop() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Your own training loop"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def tiny_gan():
    """What the user brings: 8x8 one-channel images, a generator from 32-d latents, a feature net."""
    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 64), nn.Sigmoid(), nn.Unflatten(1, (1, 8, 8)))
    D = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1))
    ramp = torch.linspace(0, 1, 8)
    real = (ramp.view(1, 1, 1, 8) * ramp.view(1, 1, 8, 1) + 0.1 * torch.rand(512, 1, 8, 8)).clamp(0, 1)
    opt_g, opt_d = torch.optim.Adam(G.parameters(), 2e-3), torch.optim.Adam(D.parameters(), 2e-3)

    def train_one_epoch(G, D):
        G.train()
        for batch in real[:384].split(64):
            fake = G(torch.randn(len(batch), 32))
            d_loss = nn.functional.softplus(-D(batch)).mean() + nn.functional.softplus(D(fake.detach())).mean()
            opt_d.zero_grad()
            d_loss.backward()
            opt_d.step()
            g_loss = nn.functional.softplus(-D(fake)).mean()
            opt_g.zero_grad()
            g_loss.backward()
            opt_g.step()
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item()}

    feature_net = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Tanh())
    return {"G": G, "D": D, "train_one_epoch": train_one_epoch, "val_images": real[384:], "feature_net": feature_net}


def test_the_readme_loop_runs_as_printed_and_logs_what_ganstop_train_logs(tracking):
    user = {**tiny_gan(), "max_epochs": 12}
    exec(compile(readme_loop(), "README.md", "exec"), user)  # noqa: S102 - the documented code, verbatim
    client = MlflowClient()
    run = client.get_run(mlflow.last_active_run().info.run_id)
    assert run.info.status == "FINISHED"
    stopper = user["stopper"]
    assert stopper.max_epochs == 12 and stopper.criteria == ("forecast", "patience")  # the default stopper
    assert run.data.tags["ganstop.stop_reason"] == stopper.stop_reason in ("max_epochs", "forecast_no_gain")
    assert run.data.metrics["stopped_epoch"] == stopper.stopped_epoch
    assert run.data.metrics["restored_epoch"] == stopper.best_epoch
    fid = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "fid")}
    assert sorted(fid) == list(range(1, stopper.stopped_epoch + 1)) and fid[stopper.best_epoch] == min(fid.values())
    assert len(client.get_metric_history(run.info.run_id, "fid_se")) == stopper.stopped_epoch
    assert run.data.params["monitor"] == "fid" and run.data.params["patience"] == "None"  # no Keras patience
    assert run.data.params["criteria"] == "forecast,patience" and run.data.params["tolerance"] == "0.05"
    assert run.data.params["max_epochs"] == "12"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"curves.png", "samples"} <= artifacts
    z = torch.randn(3, 32)
    out = mlflow.pyfunc.load_model(user["model_uri"]).predict(z.numpy())
    with torch.no_grad():  # the logged model is the best epoch's generator, not the last one
        assert torch.allclose(torch.as_tensor(out), user["best"].eval()(z), atol=1e-5)


def test_fid_on_the_users_features_matches_torchmetrics_and_gets_worse_with_noise():
    from torchmetrics.image.fid import FrechetInceptionDistance

    gan = tiny_gan()
    reference, features = gan["val_images"], gan["feature_net"]
    monitor = ganstop.QualityMonitor.images(reference=reference, features=features)
    close, far = reference.flip(0), torch.rand_like(reference)
    scores = monitor(close), monitor(far)
    assert scores[0]["fid"] < scores[1]["fid"] and scores[0]["fid_se"] > 0

    class Net(nn.Module):  # torchmetrics' own FID on the same features, as a cross-check
        num_features = 16

        def forward(self, x):
            return features(x)

    fid = FrechetInceptionDistance(feature=Net())
    fid.update(reference, real=True)
    fid.update(close, real=False)
    assert scores[0]["fid"] == pytest.approx(float(fid.compute()), rel=1e-3, abs=1e-4)


def test_point_metrics_and_bad_names():
    means, std = mixture_means("ring8")
    gen = torch.Generator().manual_seed(0)
    monitor = ganstop.QualityMonitor.points(sample_mixture(means, std, 1000, gen), means, std)
    perfect = monitor(sample_mixture(means, std, 1000, gen))
    collapsed = monitor(means[0] + std * torch.randn(1000, 2, generator=gen))
    assert perfect["modes"] == 8 and collapsed["modes"] == 1
    assert perfect["mode_error"] < 0.05 < collapsed["mode_error"] and "mode_error_se" in perfect
    with pytest.raises(ValueError, match="metrics must be some of fid, kid"):
        ganstop.QualityMonitor.images(reference=torch.rand(4, 1, 8, 8), features=nn.Flatten(), metrics=["coverage"])
    with pytest.raises(ValueError, match="monitor 'fid' is not an output"):
        ganstop.QualityMonitor.points(torch.zeros(4, 2), means, std, monitor="fid")
    with pytest.raises(AttributeError, match="no attribute 'Trainer'"):
        ganstop.Trainer  # noqa: B018 - only the documented names are public
