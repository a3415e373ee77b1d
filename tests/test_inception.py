"""Inception FID/KID on torch-fidelity's network, with no download: the weights are a file made
here in the release's format (the same architecture and keys, random weights), so every value is
checked against torch-fidelity's own ``calculate_metrics`` on that file, and the download route
is taken through a ``file://`` URL."""

import os
import sys
from pathlib import Path

import mlflow
import pytest
import torch
import torch_fidelity
from torch_fidelity import feature_extractor_inceptionv3 as fidelity_inception

from conftest import all_runs, invoke
from ganstop import recipe as rc
from ganstop.data.sets import Data
from ganstop.metrics import inception
from ganstop.metrics.scorer import Scorer
from ganstop.recipe import RecipeError
from test_formats import TINY, write_image_folder

pytestmark = pytest.mark.slow  # Inception-v3 at 299x299 on a CPU: about 0.2 s per image


def random_weights(path: Path) -> Path:
    """torch-fidelity's FID Inception-v3 with random weights, saved as its release is: a state dict.
    Kaiming-initialised convolutions keep the activations' scale through its 90 layers (the
    default init shrinks the pool features to 1e-8, where every FID is 0)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        with pytest.MonkeyPatch.context() as patch:  # build the network without loading any weights
            patch.setattr(fidelity_inception, "load_state_dict_from_url", lambda *args, **kwargs: {})
            patch.setattr(fidelity_inception.FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)
            net = fidelity_inception.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
        for module in net.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    torch.save(net.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    return random_weights(tmp_path_factory.mktemp("weights") / "fid-inception-random.pth")


class Images(torch.utils.data.Dataset):
    """uint8 images as torch-fidelity reads them: 3 channels."""

    def __init__(self, images: torch.Tensor):
        self.images = images.expand(-1, 3, -1, -1).contiguous()

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def test_fid_and_kid_equal_torch_fidelitys_own_on_the_same_weights_and_images(weights, tmp_path):
    n = 10
    g = torch.Generator().manual_seed(0)
    reference = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)  # grey and 8x8: expanded, resized
    generated = (torch.randint(0, 256, (n, 1, 8, 8), generator=g) * 0.6 + 40).to(torch.uint8)
    recipe = rc.load("digits-dcgan", [("metrics.names", ["inception_fid", "inception_kid"]),
                                      ("metrics.inception_weights", str(weights)), ("metrics.cache_dir", str(tmp_path)),
                                      ("stopping.monitor", "inception_fid")])
    val = reference.float() / 255 * 2 - 1  # a data set's images live in [-1, 1]
    scorer = Scorer(recipe, Data("image", train=val, val=val), torch.device("cpu"))
    ours = scorer(generated.float() / 255)

    theirs = torch_fidelity.calculate_metrics(
        input1=Images(generated), input2=Images(reference), fid=True, kid=True, kid_subset_size=n, cuda=False,
        cache=False, verbose=False, save_cpu_ram=True, feature_extractor_weights_path=str(weights), batch_size=n)
    assert theirs["frechet_inception_distance"] > 1  # far from the degenerate 0 of features that vanish
    assert ours["inception_fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-3)
    assert ours["inception_kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-3)


def test_images_become_torch_fidelitys_uint8_rgb_without_changing_a_byte():
    grey = torch.randint(0, 256, (4, 1, 5, 7), dtype=torch.uint8)
    rgb = inception.Inception.to_uint8(grey.float() / 255)
    assert rgb.dtype == torch.uint8 and rgb.shape == (4, 3, 5, 7)
    assert all(torch.equal(rgb[:, c], grey[:, 0]) for c in range(3))


def test_a_run_takes_the_whole_path_download_once_reference_once(weights, tmp_path, tracking, capsys, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("GANSTOP_CACHE", str(cache))
    write_image_folder(tmp_path / "data", per_class=6)  # 4 validation and 2 test images
    args = ["train", "--no-progress", "--recipe", "imagefolder-dcgan", "--set", f"{TINY} dataset.image_size=16",
            "--set", f"dataset.root={tmp_path / 'data'} metrics.names=inception_fid,inception_kid,prdc "
            f"metrics.features=inception stopping.monitor=inception_fid metrics.inception_weights={weights.as_uri()}"]
    code, _, err = invoke(args, capsys)
    assert code == 0, err
    (run,) = all_runs()
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "inception_fid")
    assert len(history) == 2 and all(m.value >= 0 for m in history)  # a check each epoch
    for name in ("inception_kid", "precision", "coverage_se", "test_inception_fid"):
        assert name in run.data.metrics, name
    downloaded = cache / "inception" / weights.name
    assert downloaded.read_bytes() == weights.read_bytes()
    references = sorted((cache / "inception").glob("reference-*.pt"))
    assert len(references) == 2  # the validation split's and the test split's
    first = {p: p.stat().st_mtime_ns for p in [downloaded, *references]}

    code, _, err = invoke(args, capsys)  # the second run reads both from the cache
    assert code == 0, err
    assert {p: p.stat().st_mtime_ns for p in [downloaded, *references]} == first
    assert sorted((cache / "inception").iterdir()) == sorted(first)


def test_the_standard_weights_are_looked_for_in_the_cache_before_any_download(weights, tmp_path):
    release = tmp_path / "inception" / Path(fidelity_inception.URL_INCEPTION_V3).name
    release.parent.mkdir()
    release.write_bytes(weights.read_bytes())
    assert inception.weights_path("", tmp_path) == release


@pytest.mark.parametrize("setting, says", [
    ("http://127.0.0.1:9/weights-inception-2015-12-05-6726825d.pth", "cannot download"),
    ("{dir}/missing.pth", "is not a file"),
    ("{dir}/notes.txt", "is not a state dict of tensors"),
    ("{weights_url_with_wrong_hash}", "invalid hash value"),
])
def test_weights_that_cannot_be_had_stop_the_run_with_one_line_before_it_starts(
        setting, says, weights, tmp_path, tracking, capsys):
    (tmp_path / "notes.txt").write_text("not weights")
    wrong = tmp_path / "fid-deadbeef.pth"
    wrong.write_bytes(weights.read_bytes())
    setting = setting.format(dir=tmp_path, weights_url_with_wrong_hash=wrong.as_uri())
    code, _, err = invoke(["train", "--no-progress", "--recipe", "digits-dcgan", "--set",
                           f"metrics.names=inception_fid stopping.monitor=inception_fid "
                           f"metrics.inception_weights={setting}"], capsys)
    assert code != 0 and len(err.strip().splitlines()) == 1 and says in err, err
    assert all_runs() == []
    assert not list(Path(os.environ["GANSTOP_CACHE"], "inception").glob("fid-deadbeef*"))  # nothing half written


def test_a_missing_torch_fidelity_is_one_recipe_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch_fidelity.feature_extractor_inceptionv3", None)  # what ImportError does
    with pytest.raises(RecipeError, match="pip install 'mlflow-ganstop\\[inception\\]'"):
        inception.standard_url()
