"""Readers for the standard on-disk image formats, so no torchvision is needed.

Each returns ``(uint8 images [N, C, H, W], int64 labels [N])``. Anything wrong with the files
a user pointed ``dataset.root`` at is a :class:`RecipeError` whose one line names the file and
what is wrong with it, never a traceback from numpy, gzip or pickle.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch

from ganstop.errors import RecipeError

MNIST_IMAGES, MNIST_LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"
IDX_IMAGES, IDX_LABELS = 0x00000803, 0x00000801  # unsigned bytes; 3 dims, 1 dim
CIFAR_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_SIDE = 32
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
T = TypeVar("T")


def _folder(name: str, root: str) -> Path:
    """``root`` as a path, checked first so a mistyped root is not reported as missing files."""
    path = Path(root)
    if not path.is_dir():
        raise RecipeError(f"dataset {name}: dataset.root {root!r} is not a folder")
    return path


def _find(name: str, folders: tuple[Path, ...], files: tuple[str, ...]) -> Path:
    """The first of ``files`` in the first of ``folders`` that has one (the layouts in use)."""
    for folder in folders:
        for file in files:
            if (folder / file).is_file():
                return folder / file
    where = ", ".join(repr(str(f)) for f in folders)
    raise RecipeError(f"dataset {name}: none of {', '.join(files)} in {where}")


def read_mnist(root: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The MNIST training idx files, plain or gzipped, in ``root``, ``root/raw`` or
    ``root/MNIST/raw`` (where torchvision downloads them): images [N, 1, 28, 28]."""
    base = _folder("mnist", root)
    folders = (base, base / "raw", base / "MNIST" / "raw")
    images_path = _find("mnist", folders, (MNIST_IMAGES, f"{MNIST_IMAGES}.gz"))
    labels_path = _find("mnist", folders, (MNIST_LABELS, f"{MNIST_LABELS}.gz"))
    images = _read_idx(images_path, IDX_IMAGES)
    labels = _read_idx(labels_path, IDX_LABELS)
    if len(images) != len(labels):
        raise RecipeError(f"dataset mnist: {images_path} holds {len(images)} images but {labels_path} "
                          f"holds {len(labels)} labels")
    return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels.astype(np.int64))


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """An idx array: a big-endian magic (type and number of dims), the dims, then the bytes;
    the file's length must be exactly what the dims say (a cut-off download is not data)."""
    raw = _read_bytes(path)
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if raw[:4] != struct.pack(">I", magic):
        found = f"0x{raw[:4].hex()}" if raw else "an empty file"
        raise RecipeError(f"dataset mnist: {path} is not an idx file of {ndim}-d unsigned bytes "
                          f"(magic number {found}, expected 0x{magic:08x})")
    if len(raw) < header:
        raise RecipeError(f"dataset mnist: {path} is truncated: {len(raw)} bytes, shorter than its header")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    size, found = int(np.prod(dims, dtype=np.int64)), len(raw) - header
    if found != size or not size:
        problem = "holds no data" if not size else "is truncated" if found < size else "is longer than its header says"
        raise RecipeError(f"dataset mnist: {path} {problem}: its header says {' x '.join(map(str, dims))} "
                          f"({size} bytes of data), the file has {found}")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when its name ends in .gz."""
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
        raise RecipeError(f"dataset mnist: {path} could not be read: {exc}") from None


def read_cifar10(root: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The training batches of CIFAR-10's python version (``data_batch_1`` .. ``_5``, whichever
    are there) in ``root`` or ``root/cifar-10-batches-py``: images [N, 3, 32, 32]. The test
    batch is not read: ganstop makes its own validation and test splits."""
    base = _folder("cifar10", root)
    folders = (base, base / "cifar-10-batches-py")
    first = _find("cifar10", folders, CIFAR_BATCHES)
    batches = [_read_cifar_batch(first.parent / b) for b in CIFAR_BATCHES if (first.parent / b).is_file()]
    images = np.concatenate([data for data, _ in batches])
    labels = np.concatenate([labels for _, labels in batches])
    return torch.from_numpy(images.reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE)), torch.from_numpy(labels)


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch: ``b"data"`` N x 3072 uint8 rows (1024 red, then green, then blue, each
    row-major) and ``b"labels"``, N ints."""
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
    except Exception as exc:  # unpickling garbage raises nearly anything (pickle's docs say so)
        raise RecipeError(f"dataset cifar10: {path} is not a readable pickle: {type(exc).__name__}: {exc}") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        raise RecipeError(f"dataset cifar10: {path} is not a CIFAR-10 batch (a dict with b'data' and b'labels')")
    try:
        data, labels = np.asarray(batch[b"data"]), np.asarray(batch[b"labels"], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        raise RecipeError(f"dataset cifar10: {path}: b'data' or b'labels' is not an array: {exc}") from None
    side = CIFAR_SIDE * CIFAR_SIDE * 3
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != side or not len(data):
        raise RecipeError(f"dataset cifar10: {path}: b'data' is {data.dtype} of shape {data.shape}, "
                          f"not N x {side} uint8")
    if labels.shape != (len(data),):
        raise RecipeError(f"dataset cifar10: {path} holds {len(data)} images but b'labels' is of shape {labels.shape}")
    if labels.min() < 0:
        raise RecipeError(f"dataset cifar10: {path}: b'labels' has negative labels")
    return data, labels


def read_image_folder(root: str, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``root/<class>/<image>`` (torchvision's ImageFolder layout), read with Pillow: each image
    square-cropped at its centre and resized to ``size`` as it is read, so a folder of large
    photos never sits in memory at full size (0: the smallest image's side)."""
    classes = sorted(d for d in _folder("imagefolder", root).iterdir() if d.is_dir())
    files = [(path, label) for label, folder in enumerate(classes) for path in sorted(folder.rglob("*"))
             if path.suffix.lower() in IMAGE_SUFFIXES]
    if not files:
        raise RecipeError(f"dataset imagefolder: dataset.root {root!r} holds no images in class folders "
                          "(root/<class>/<image>.png)")
    side = size or min(min(_read_image(path, lambda image: image.size)) for path, _ in files)
    images = [_read_image(path, lambda image: _square(image, side)) for path, _ in files]
    return torch.stack(images), torch.tensor([label for _, label in files])


def _read_image(path: Path, read: Callable[[Any], T]) -> T:
    """``read(image)`` on the open image at ``path``; a file Pillow cannot decode is named."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return read(image)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # UnidentifiedImageError is an OSError
        raise RecipeError(f"dataset imagefolder: {path} is not a readable image: {exc}") from None


def _square(image: Any, side: int) -> torch.Tensor:
    """The centred square of ``image``, resized to ``side`` x ``side``, as uint8 [3, side, side]."""
    from PIL import Image

    width, height = image.size
    edge = min(width, height)
    box = ((width - edge) // 2, (height - edge) // 2, (width + edge) // 2, (height + edge) // 2)
    square = image.convert("RGB").resize((side, side), Image.Resampling.LANCZOS, box=box)
    return torch.from_numpy(np.asarray(square).copy()).permute(2, 0, 1)
