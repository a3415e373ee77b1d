"""The standard on-disk image formats, read without torchvision: exact round trips, one-line
errors naming the file, and each shipped image recipe trained end to end through the CLI on a
tiny data set written in that recipe's real format."""

import functools
import gzip
import pickle
import struct

import mlflow
import numpy as np
import pytest
import torch

from conftest import all_runs, invoke
from ganstop.data import formats
from ganstop.recipe import RecipeError

N_CLASSES = 3


def pattern(label: int, channels: int, height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """Noise with a class you can tell at a glance: class k lights channel k % channels and the
    k-th third of the rows, so the feature classifier learns it in two epochs."""
    image = rng.integers(0, 60, (channels, height, width))
    image[label % channels, label * height // 3:(label + 1) * height // 3] += 180
    return image.astype(np.uint8)


def labelled(n: int, channels: int, side: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` square images [n, channels, side, side] of the classes 0, 1, 2, 0, 1, ..."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % N_CLASSES
    return np.stack([pattern(int(k), channels, side, side, rng) for k in labels]), labels


def write_idx(path, array: np.ndarray, magic: int) -> None:
    """An idx file: big-endian magic, big-endian dims, the bytes; gzipped if the name ends in .gz."""
    raw = struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def write_mnist(folder, images: np.ndarray, labels: np.ndarray, gzip_images: bool = True) -> None:
    write_idx(folder / ("train-images-idx3-ubyte" + ".gz" * gzip_images), images[:, 0], 0x00000803)
    write_idx(folder / "train-labels-idx1-ubyte", labels, 0x00000801)


def write_cifar_batch(path, images: np.ndarray, labels: np.ndarray, number: int = 1) -> None:
    """One batch as CIFAR-10's python version pickles it: rows of 1024 red, 1024 green, 1024 blue."""
    batch = {b"batch_label": f"training batch {number} of 5".encode(), b"labels": [int(k) for k in labels],
             b"data": images.reshape(len(images), -1), b"filenames": [b"%d.png" % i for i in range(len(images))]}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(batch, protocol=2))


def write_image_folder(root, per_class: int = 16, sizes=((40, 30), (17, 17), (30, 90), (64, 48))) -> None:
    """Class folders of PNGs of several sizes and aspect ratios, plus a file that is no image."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for label in range(N_CLASSES):
        (root / f"class{label}").mkdir(parents=True)
        for i in range(per_class):
            width, height = sizes[i % len(sizes)]
            image = pattern(label, 3, height, width, rng).transpose(1, 2, 0)
            Image.fromarray(image).save(root / f"class{label}" / f"{i}.png")
    (root / "class0" / "notes.txt").write_text("not an image")


# --- the readers ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["", "raw", "MNIST/raw"])
@pytest.mark.parametrize("gzip_images", [False, True])
def test_mnist_idx_files_round_trip_exactly(tmp_path, where, gzip_images):
    images, labels = labelled(7, 1, 28)
    write_mnist(tmp_path / where, images, labels, gzip_images)
    got_images, got_labels = formats.read_mnist(str(tmp_path))
    assert got_images.dtype == torch.uint8 and tuple(got_images.shape) == (7, 1, 28, 28)
    assert np.array_equal(got_images.numpy(), images)
    assert got_labels.dtype == torch.int64 and got_labels.tolist() == labels.tolist()


def test_cifar_batches_round_trip_with_red_in_channel_0(tmp_path):
    images, labels = labelled(10, 3, 32)
    images[0, :, 5, 7] = (255, 0, 0)  # a red pixel at row 5, column 7
    folder = tmp_path / "cifar-10-batches-py"
    write_cifar_batch(folder / "data_batch_1", images[:6], labels[:6], 1)
    write_cifar_batch(folder / "data_batch_3", images[6:], labels[6:], 3)  # whichever batches are there
    (folder / "test_batch").write_bytes(b"not read: ganstop makes its own splits")
    assert images.reshape(10, -1)[0, 5 * 32 + 7] == 255  # channel-major rows, as the real files hold
    got_images, got_labels = formats.read_cifar10(str(tmp_path))
    assert got_images.dtype == torch.uint8 and tuple(got_images.shape) == (10, 3, 32, 32)
    assert got_images[0, :, 5, 7].tolist() == [255, 0, 0]
    assert np.array_equal(got_images.numpy(), images)
    assert got_labels.dtype == torch.int64 and got_labels.tolist() == labels.tolist()


def test_an_image_folder_is_centre_cropped_and_resized_as_it_is_read(tmp_path):
    from PIL import Image

    write_image_folder(tmp_path / "images", per_class=4)
    wide = np.zeros((30, 210, 3), np.uint8)  # red, green, blue thirds; the centred 30 x 30 is all green
    wide[:, :70], wide[:, 70:140], wide[:, 140:] = (255, 0, 0), (0, 255, 0), (0, 0, 255)
    Image.fromarray(wide).save(tmp_path / "images" / "class2" / "wide.png")
    images, labels = formats.read_image_folder(str(tmp_path / "images"), 8)
    assert images.dtype == torch.uint8 and tuple(images.shape) == (13, 3, 8, 8)
    assert labels.tolist() == [0] * 4 + [1] * 4 + [2] * 5  # class folders in name order; notes.txt skipped
    assert images[-1].float().mean((1, 2)).tolist() == pytest.approx([0, 255, 0], abs=1)  # the centre third
    smallest, _ = formats.read_image_folder(str(tmp_path / "images"), 0)
    assert tuple(smallest.shape[1:]) == (3, 17, 17)  # 0: the smallest image's side


def cut(path, n: int) -> None:
    """Drop the file's last ``n`` bytes, as an interrupted download does."""
    path.write_bytes(path.read_bytes()[:-n])


def mnist_files(root, n_labels: int = 5):
    """Plain idx files of 5 images and ``n_labels`` labels; their paths."""
    images, labels = labelled(5, 1, 28)
    write_mnist(root, images, labels[:n_labels], gzip_images=False)
    return root / "train-images-idx3-ubyte", root / "train-labels-idx1-ubyte"


def cifar_file(root, replace: dict | None = None):
    """A good batch of 4 images, with ``replace``'s entries swapped in; its path."""
    images, labels = labelled(4, 3, 32)
    path = root / "data_batch_1"
    write_cifar_batch(path, images, labels)
    if replace:
        path.write_bytes(pickle.dumps({**pickle.loads(path.read_bytes()), **replace}))
    return path


# each breaks a data folder the way users do and returns (the file the error must name, what it must say)

def bad_magic(root):
    images, _ = mnist_files(root)
    images.write_bytes(struct.pack(">I", 0x00000801) + images.read_bytes()[4:])
    return images, "magic number 0x00000801, expected 0x00000803"


def truncated_idx(root):
    images, _ = mnist_files(root)
    cut(images, 100)
    return images, "is truncated: its header says 5 x 28 x 28"


def truncated_gzip(root):
    images, labels = labelled(5, 1, 28)
    write_mnist(root, images, labels)
    cut(root / "train-images-idx3-ubyte.gz", 50)
    return root / "train-images-idx3-ubyte.gz", "could not be read"


def count_mismatch(root):
    _, labels = mnist_files(root, n_labels=4)
    return labels, "holds 5 images but"


def no_idx_files(root):
    (root / "MNIST" / "raw").mkdir(parents=True)
    return root / "MNIST" / "raw", "none of train-images-idx3-ubyte"


def missing_folder(root):
    return root, "is not a folder"


def no_data_key(root):
    path = cifar_file(root)
    path.write_bytes(pickle.dumps({b"labels": [0, 1, 2, 0]}))
    return path, "is not a CIFAR-10 batch (a dict with b'data' and b'labels')"


def not_a_pickle(root):
    path = cifar_file(root)
    cut(path, path.stat().st_size // 2)
    return path, "is not a readable pickle"


def wrong_row_size(root):
    return cifar_file(root, {b"data": np.zeros((4, 1024), np.uint8)}), "not N x 3072 uint8"


def too_few_labels(root):
    return cifar_file(root, {b"labels": [0, 1]}), "holds 4 images but b'labels'"


def broken_png(root):
    write_image_folder(root, per_class=1)
    (root / "class1" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root / "class1" / "broken.png", "is not a readable image"


def no_images(root):
    (root / "a").mkdir(parents=True)
    (root / "a" / "notes.txt").write_text("no image here")
    return root, "holds no images in class folders"


BROKEN = [(bad_magic, formats.read_mnist), (truncated_idx, formats.read_mnist), (truncated_gzip, formats.read_mnist),
          (count_mismatch, formats.read_mnist), (no_idx_files, formats.read_mnist),
          (missing_folder, formats.read_cifar10), (no_data_key, formats.read_cifar10),
          (not_a_pickle, formats.read_cifar10), (wrong_row_size, formats.read_cifar10),
          (too_few_labels, formats.read_cifar10), (broken_png, functools.partial(formats.read_image_folder, size=8)),
          (no_images, functools.partial(formats.read_image_folder, size=8))]


@pytest.mark.parametrize("make, read", BROKEN, ids=[make.__name__ for make, _ in BROKEN])
def test_broken_files_are_one_line_naming_the_file(tmp_path, make, read):
    path, message = make(tmp_path / "data")
    with pytest.raises(RecipeError) as caught:
        read(str(tmp_path / "data"))
    text = str(caught.value)
    assert "\n" not in text and message in text and str(path) in text, text
    error = caught.value  # nothing chained: no numpy, gzip or pickle traceback behind the line
    assert error.__cause__ is None and (error.__context__ is None or error.__suppress_context__)


# --- each shipped image recipe, end to end through the CLI -----------------------------------


def mnist_set(root) -> None:
    images, labels = labelled(90, 1, 28)
    write_mnist(root / "MNIST" / "raw", images, labels)


def cifar_set(root) -> None:
    images, labels = labelled(90, 3, 32)
    for number, part in enumerate(np.array_split(np.arange(90), 2), 1):
        write_cifar_batch(root / "cifar-10-batches-py" / f"data_batch_{number}", images[part], labels[part], number)


TINY = ("train.max_epochs=2 model.width=8 model.z_dim=8 train.batch_size=16 metrics.classifier_epochs=2 "
        "stopping.warmup=1 metrics.every=1 metrics.grid_size=16 train.checkpoint_seconds=0")
RECIPES = [  # (recipe, writer, extra overrides, generated sample shape)
    ("mnist-dcgan", mnist_set, "", (1, 32, 32)),
    ("cifar10-dcgan", cifar_set, "", (3, 32, 32)),
    ("imagefolder-dcgan", write_image_folder, "dataset.image_size=16", (3, 16, 16)),
]


def test_a_split_too_small_for_the_image_metrics_is_one_line_before_the_run(tmp_path, tracking, capsys):
    """12 images leave 1 for the test split: its FID would have failed after the whole training."""
    write_image_folder(tmp_path / "data", per_class=4)
    code, _, err = invoke(["train", "--no-progress", "--recipe", "imagefolder-dcgan", "--set", f"{TINY} dataset.image_size=16",
                           "--set", f"dataset.root={tmp_path / 'data'}"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "holds 1 image(s)" in err and "dataset.test_fraction" in err
    assert all_runs() == []


@pytest.mark.parametrize("recipe, write, extra, shape", RECIPES, ids=[r[0] for r in RECIPES])
def test_each_image_recipe_trains_end_to_end_on_its_real_format(recipe, write, extra, shape, tmp_path, tracking,
                                                                   capsys):
    write(tmp_path / "data")
    code, out, err = invoke(["train", "--no-progress", "--recipe", recipe, "--set", f"{TINY} {extra}",
                             "--set", f"dataset.root={tmp_path / 'data'}"], capsys)
    assert code == 0, err
    (run,) = all_runs()
    assert run.info.status == "FINISHED" and run.info.run_id in out
    assert run.data.params["dataset.name"] == recipe.split("-")[0]
    assert run.data.metrics["stopped_epoch"] == 2 and "fid" in run.data.metrics and "test_fid" in run.data.metrics
    model = mlflow.pyfunc.load_model(run.data.tags["ganstop.model_uri"])
    samples = model.predict(np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32))
    assert samples.shape == (3, *shape) and np.isfinite(samples).all()
