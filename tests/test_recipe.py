from pathlib import Path

import pytest

from conftest import ROOT
from ganstop import recipe as rc
from ganstop.metrics.registry import resolve

RECIPES = sorted((ROOT / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.stem)
def test_shipped_recipes_load_and_are_short(path):
    recipe = rc.load(path)
    assert len(path.read_text().splitlines()) <= 40
    assert recipe.search["space"]


def test_defaults_then_file_then_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train:\n  max_epochs: 7\nstopping:\n  patience: 4\n")
    recipe = rc.load(path, [("stopping.patience", 9), ("decay.g_schedule", "cosine")])
    assert recipe.train.max_epochs == 7  # file over default
    assert recipe.stopping.patience == 9  # override over file
    assert recipe.decay.g_schedule == "cosine"
    assert recipe.train.lr_d == rc.TrainConfig().lr_d  # untouched default


def test_override_values_are_read_as_yaml():
    assert rc.load(None, [rc.parse_override("train.lr_g=1e-3")]).train.lr_g == 1e-3  # YAML 1.1 keeps it a str
    assert rc.parse_override("ema.enabled=false") == ("ema.enabled", False)
    assert rc.parse_override("metrics.names=[fid, kid]") == ("metrics.names", ["fid", "kid"])
    with pytest.raises(rc.RecipeError, match="section.key=value"):
        rc.parse_override("patience5")


def test_unknown_key_names_the_closest(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("stopping:\n  patients: 3\n")
    with pytest.raises(rc.RecipeError, match="did you mean 'patience'"):
        rc.load(path)
    with pytest.raises(rc.RecipeError, match="did you mean 'stopping'"):
        rc.load(None, [("stoping.patience", 3)])


@pytest.mark.parametrize("override, message", [
    (("stopping.patience", "soon"), "must be int"),
    (("stopping.patience", 2.5), "must be int"),
    (("train.lr_g", -1), "must be > 0"),
    (("ema.decay", 1.5), r"in \[0, 1\)"),
    (("model.d_norm", "layer"), "must be one of batch, none, spectral"),
    (("train.device", "tpu"), "auto, cpu, cuda"),
    (("stopping.warmup", 500), "below train.max_epochs"),
    (("metrics.names", ["fid", "precision"]), "unknown metric 'precision'"),
    (("stopping.monitor", "fdi"), "did you mean 'fid'"),
    (("decay.d_penalty", "l2"), "needs decay.d_penalty_lambda"),
    (("dataset.name", "ring8"), "set model.family=mlp"),
    (("stopping.min_delta", "soon"), "a number >= 0 or auto"),
    (("stopping.min_delta", -0.1), "must be >= 0"),
    (("stopping.criteria", ["patience", "trnd"]), "unknown stopping criterion 'trnd' .*did you mean 'trend'"),
    (("stopping.criteria", []), "at least one of forecast, curve_model, patience, trend, gl, pq, up"),
    (("stopping.combine", "most"), "must be one of any, all"),
    (("stopping.delta_reference", "first"), "must be one of improvement, best"),
    (("stopping.window", 2), "window must be >= 3"),
    (("stopping.patience_increase", 0.5), r"stopping.patience_increase must be >= 1 \(1: a fixed patience\), not 0.5"),
    (("stopping.strip", 0), "stopping.strip must be > 0"),
    (("stopping.min_delta_mode", "percent"), "absolute, relative, se"),
])
def test_bad_values_are_rejected_with_the_fix(override, message):
    with pytest.raises(rc.RecipeError, match=message):
        rc.load(ROOT / "recipes" / "digits-dcgan.yaml", [override])


def test_min_delta_in_standard_errors_needs_a_monitor_that_has_one():
    with pytest.raises(rc.RecipeError, match="needs a monitor with one, and class_kl has none; use one of coverage, density, fid, kid, precision, recall"):
        rc.load(None, [("stopping.monitor", "class_kl"), ("stopping.min_delta", "auto")])
    assert rc.load(None, [("stopping.monitor", "kid"), ("stopping.min_delta_mode", "se")])


@pytest.mark.parametrize("text, message", [
    ("train: [1, 2", "not valid YAML at line"),
    ("- a\n- b\n", "must be a mapping of sections"),
    ("train: 3\n", "must be a mapping of keys"),
])
def test_broken_recipe_files(tmp_path, text, message):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(rc.RecipeError, match=message):
        rc.load(path)


def test_missing_recipe_file():
    with pytest.raises(rc.RecipeError, match="does not exist"):
        rc.load(Path("nope.yaml"))


def test_safe_load_refuses_python_objects(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("train: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(rc.RecipeError, match="not valid YAML"):
        rc.load(path)


def test_metric_selection_follows_the_dataset():
    images = resolve(rc.load(None))
    assert images.names == ["fid", "kid", "coverage", "prdc"] and (images.monitor, images.mode) == ("fid", "min")
    points = resolve(rc.load(ROOT / "recipes" / "ring8-mlp.yaml", [("stopping.monitor", "")]))
    assert points.names == ["modes", "swd"] and (points.monitor, points.mode) == ("mode_error", "min")
    hq = resolve(rc.load(ROOT / "recipes" / "ring8-mlp.yaml", [("stopping.monitor", "hq_ratio")]))
    assert hq.mode == "max"
    with pytest.raises(rc.RecipeError, match="is for image data"):
        rc.load(ROOT / "recipes" / "ring8-mlp.yaml", [("metrics.names", ["fid"])])


def test_min_delta_reads_numbers_and_auto_from_yaml_and_the_command_line():
    assert rc.load(None, [("stopping.min_delta", "0.05")]).stopping.min_delta == 0.05  # --min-delta 0.05
    assert rc.load(None, [("stopping.min_delta", 1)]).stopping.min_delta == 1.0
    assert rc.load(None, [("stopping.min_delta", "auto")]).stopping.min_delta == "auto"


def test_flat_params_cover_every_setting():
    flat = rc.load(None).flat()
    assert flat["stopping.patience"] == rc.StoppingConfig().patience
    assert "decay.g_schedule" in flat and "ema.decay" in flat and "metrics.every" in flat
    assert not any(key.startswith("search") for key in flat)


def test_mask_hides_passwords_in_urls_only():
    from ganstop.masking import mask

    assert mask("postgresql://bob:s3cr%40t@db:5432/optuna") == "postgresql://bob:***@db:5432/optuna"
    assert mask("see http://u:p@h and https://x:y@z/") == "see http://u:***@h and https://x:***@z/"
    assert mask("sqlite:///mlflow.db") == "sqlite:///mlflow.db"
    assert mask("http://host:5000/path") == "http://host:5000/path"  # a port is not a password


def test_several_overrides_in_one_set_value_keep_spaces_inside_values():
    from ganstop.cli import OVERRIDE_START

    items = OVERRIDE_START.split("stopping.patience=4  metrics.names=[fid, kid] train.lr_g=1e-3")
    assert [rc.parse_override(i) for i in items] == [
        ("stopping.patience", 4), ("metrics.names", ["fid", "kid"]), ("train.lr_g", "1e-3")]
