"""Plugins by entry point: names resolved everywhere, one-line errors for unknown or broken ones,
plugin sections validated like built-in ones, and the example package under examples/ trained,
tuned and promoted through `mlflow run` with no change to ganstop."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from conftest import ROOT, cli_env, invoke, mlflow_run, tiny
from ganstop import plugins
from ganstop import recipe as rc
from ganstop.data.sets import load_data

EXAMPLE = ROOT / "examples" / "sngan-plugin"


def add_distribution(site: Path, name: str, entry_points: str) -> None:
    """A distribution as pip would leave it: metadata and entry_points.txt in a dist-info folder."""
    info = site / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(entry_points)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path whose distributions the plugin lookup sees from now on."""
    folder = tmp_path / "site"
    folder.mkdir()
    yield from on_path(folder, monkeypatch)


def on_path(folder: Path, monkeypatch):
    """``folder`` on sys.path while the test runs, the plugin lookup's caches cleared on both sides."""
    monkeypatch.syspath_prepend(str(folder))
    refresh()
    yield folder
    monkeypatch.undo()
    refresh()


def refresh() -> None:
    plugins.installed.cache_clear()
    plugins.load.cache_clear()


@pytest.fixture(scope="module")
def example_site(tmp_path_factory) -> Path:
    """The example package pip-installed into a folder of its own (a copy: nothing is built in the repo)."""
    root = tmp_path_factory.mktemp("example")
    source = shutil.copytree(EXAMPLE, root / "src", ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = root / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                    "--target", str(target), str(source)], check=True, capture_output=True, timeout=300)
    return target


@pytest.fixture
def example(example_site, monkeypatch):
    yield from on_path(example_site, monkeypatch)


def test_the_built_ins_are_entry_points_like_a_users():
    assert {"mlp", "dcgan"} <= set(plugins.names("models"))
    assert {"digits", "ring8", "grid25", "mnist", "cifar10", "imagefolder"} <= set(plugins.names("datasets"))
    assert {"nonsaturating", "hinge", "wgan-gp"} <= set(plugins.names("losses"))


@pytest.mark.parametrize("key, value, message", [
    ("model.family", "dcgna", "unknown model family 'dcgna' (did you mean 'dcgan'?); installed: dcgan, mlp"),
    ("dataset.name", "ring9", "unknown dataset 'ring9' (did you mean 'ring8'?); installed: cifar10, digits, grid25"),
    ("train.loss", "wgan", "unknown loss 'wgan' (did you mean 'wgan-gp'?); installed: hinge, nonsaturating, wgan-gp"),
])
def test_unknown_names_list_what_is_installed(key, value, message, capsys):
    with pytest.raises(rc.RecipeError) as err:
        rc.load(None, [(key, value)])
    assert str(err.value).startswith(message)
    code, _, stderr = invoke(["train", "--set", f"{key}={value}"], capsys)  # the CLI says the same, once
    assert code == 2 and stderr.startswith(f"ganstop: error: {message}") and stderr.count("\n") == 1


def test_a_broken_plugin_is_one_line_naming_it(site, capsys):
    (site / "broken_gan.py").write_text("import no_such_module_anywhere\n")
    (site / "typo_gan.py").write_text("family = 'not a ModelFamily'\n")
    add_distribution(site, "broken", '[ganstop.models]\nbroken = broken_gan:family\ntypo = typo_gan:family\n'
                                      '[ganstop.losses]\nmodel = typo_gan:family\n')
    cases = {
        "broken": "model family plugin 'broken' (broken_gan:family) cannot be imported: "
                  "No module named 'no_such_module_anywhere'",
        "typo": "model family plugin 'typo' (typo_gan:family) is a str, not a ganstop.plugins.ModelFamily",
    }
    for name, message in cases.items():
        code, _, stderr = invoke(["train", "--set", f"model.family={name}"], capsys)
        assert (code, stderr) == (2, f"ganstop: error: {message}\n")
    with pytest.raises(rc.RecipeError, match="takes the name of a recipe section"):
        plugins.load("losses", "model")
    code, out, _ = invoke(["plugins"], capsys)  # listed, even though it cannot be used
    assert code == 0 and "  typo             typo_gan:family" in out and "  dcgan            ganstop.training.models:dcgan" in out


def test_plugin_sections_are_validated_set_and_logged_like_built_ins(example):
    recipe = rc.load(EXAMPLE / "recipes" / "digits-sngan.yaml")
    assert recipe.options("sngan").channels == 64
    assert recipe.flat()["sngan.slope"] == 0.1  # defaults are filled in, so runs log them as params
    assert "sngan" in rc.to_yaml(recipe)
    assert rc.load(None, [("model.family", "sngan"), ("sngan.channels", "32")]).options("sngan").channels == 32
    for override, message in [
        (("sngan.chanels", 8), "unknown recipe key 'sngan.chanels' (did you mean 'channels'?)"),
        (("sngan.channels", 0), "sngan.channels must be > 0, not 0"),
        (("sngan.slope", "steep"), "sngan.slope must be float, not 'steep'"),
        (("sngan.slope", True), "sngan.slope must be float, not True"),  # not read as 1.0, as for built-ins
        (("sgnan.channels", 8), "unknown recipe section 'sgnan' (did you mean 'sngan'?)"),
    ]:
        with pytest.raises(rc.RecipeError) as err:
            rc.load(None, [("model.family", "sngan"), override])
        assert str(err.value) == message
    with pytest.raises(rc.RecipeError, match="model family sngan models image: set model.family=mlp"):
        rc.load(None, [("model.family", "sngan"), ("dataset.name", "ring8")])


def test_the_example_family_and_loss_train_and_its_dataset_reads_npz(example, tmp_path):
    from ganstop.training import models

    recipe = rc.load(EXAMPLE / "recipes" / "digits-sngan.yaml", [("sngan.channels", 16)])
    for shape in [(1, 8, 8), (3, 32, 32), (3, 12, 12)]:
        generator, discriminator = models.build(recipe, shape)
        fake = generator(torch.randn(5, recipe.model.z_dim))
        assert fake.shape == (5, *shape) and discriminator(fake).shape == (5,)

    rng = np.random.default_rng(0)
    np.savez(tmp_path / "faces.npz", images=rng.integers(0, 256, (60, 3, 16, 16), dtype=np.uint8),
             labels=np.arange(60) % 3)
    own = rc.load(None, [("dataset.name", "npz"), ("dataset.root", str(tmp_path)), ("npz.file", "faces.npz"),
                         ("model.family", "sngan")])
    data = load_data(own)
    assert data.sample_shape == (3, 16, 16) and data.n_classes == 3
    assert len(data.train) + len(data.val) + len(data.test) == 60
    assert data.train.min() >= -1 and data.train.max() <= 1
    # floats in [-1, 1] as numpy writes them (float64) train in the models' float32
    np.savez(tmp_path / "floats.npz", images=rng.uniform(-1, 1, (60, 3, 16, 16)), labels=np.arange(60) % 3)
    own.plugins["npz"].file = "floats.npz"
    data = load_data(own)
    assert data.train.dtype == torch.float32 and data.val.dtype == torch.float32
    with pytest.raises(rc.RecipeError, match="dataset npz needs dataset.root"):
        rc.load(None, [("dataset.name", "npz")])
    own.plugins["npz"].file = "missing.npz"
    with pytest.raises(rc.RecipeError, match="dataset npz: cannot read images and labels from"):
        load_data(own)


@pytest.mark.slow
def test_the_example_package_trains_tunes_and_promotes_through_mlflow_run(example_site, tracking, tmp_path):
    from mlflow.tracking import MlflowClient

    recipe = tmp_path / "digits-sngan.yaml"  # the example's recipe, its search space cut to what 2 epochs allow
    document = yaml.safe_load((EXAMPLE / "recipes" / "digits-sngan.yaml").read_text())
    document["search"]["space"] = {k: v for k, v in document["search"]["space"].items() if not k.startswith("stopping.")}
    recipe.write_text(yaml.safe_dump(document))
    settings = " ".join(f"{k}={v}" for k, v in tiny("digits", **{"sngan.channels": 16}))
    env = cli_env(MLFLOW_TRACKING_URI=tracking, PYTHONPATH=str(example_site))

    def run(entry: str, *params: str) -> None:
        proc = mlflow_run(entry, *params, env=env, experiment="plugin")
        assert proc.returncode == 0, proc.stderr[-3000:]

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    run("main", f"recipe={recipe}", f"overrides={settings}")
    run("tune", f"recipe={recipe}", "n_trials=2", f"storage={storage}", "study_name=sn", "sampler_seed=1",
               f"overrides={settings}")
    run("promote", "model_name=sngan-digits", "study_name=sn", f"storage={storage}")

    client = MlflowClient()
    runs = client.search_runs([client.get_experiment_by_name("plugin").experiment_id])
    trained = [r for r in runs if r.data.params.get("model.family") == "sngan"]
    trials = [r for r in trained if "mlflow.parentRunId" in r.data.tags]
    assert len(trained) == 3 and len(trials) == 2  # the single run and both trials
    assert all("fid" in r.data.metrics and r.data.params["train.loss"] in ("lsgan", "hinge") for r in trained)
    # the plugin's own key, overridden in the single run and searched in the trials
    assert [r.data.params["sngan.channels"] for r in trained if r not in trials] == ["16"]
    assert {r.data.params["sngan.channels"] for r in trials} <= {"32", "64"}
    champion = client.get_model_version_by_alias("sngan-digits", "champion")
    assert champion.tags["ganstop.source_run"] in {r.info.run_id for r in trained}
