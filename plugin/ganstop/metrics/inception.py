"""Inception-v3 pool features as papers compute them: torch-fidelity's FID network and weights.

Papers' FID and KID are torch-fidelity's (and the TensorFlow original's) numbers: its
``inception-v3-compat`` network, the 2015-12-05 weights, uint8 RGB input that the network itself
resizes to 299x299 with TensorFlow 1.x's bilinear interpolation. ganstop feeds it exactly that:
samples in [0, 1] are rounded to uint8 (``x * 255`` rounded, so an image that came from uint8
goes back to the same bytes), grey ones repeated to 3 channels, and torch-fidelity does the
resize. Nothing here re-implements the network.

``metrics.inception_weights`` says where the weights come from: empty for torch-fidelity's own
release (downloaded once into ganstop's cache), a URL (a mirror: also downloaded once), or a
local file. Every route ends at the same ``feature_extractor_weights_path``. The reference's
features cost a full Inception pass over it, so they are cached per data and weights fingerprint.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
from pathlib import Path
from urllib.parse import urlparse

import torch

from ganstop.paths import save_atomic
from ganstop.errors import RecipeError

FEATURES = "2048"
CHUNK = 256  # images per Inception pass: 299x299 activations are large
PICKLE_FREE = "a state dict of tensors (torch.load with weights_only=True)"


def _extractor_class():
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ImportError as exc:  # torch-fidelity itself, or the torchvision it imports
        raise RecipeError(f"the Inception metrics need torch-fidelity ({exc}): "
                          "pip install 'mlflow-ganstop[inception]'") from None
    return FeatureExtractorInceptionV3


def standard_url() -> str:
    """torch-fidelity's release of the FID Inception weights."""
    _extractor_class()
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    return URL_INCEPTION_V3


def weights_path(setting: str, cache: Path) -> Path:
    """The local weights file for ``metrics.inception_weights`` (empty: the standard release), a
    URL being downloaded once into ``cache/inception``; a RecipeError when there is none."""
    url = setting or standard_url()
    if urlparse(url).scheme not in ("http", "https", "file", "ftp"):
        path = Path(setting).expanduser()
        if not path.is_file():
            raise RecipeError(f"metrics.inception_weights {setting!r} is not a file (nor a URL)")
        return path
    path = cache / "inception" / Path(urlparse(url).path).name
    if not path.is_file():
        _download(url, path, setting)
    return path


def _download(url: str, path: Path, setting: str) -> None:
    """Into ``path``, atomically; the hash prefix in a torch-hub style name (``-6726825d.pth``)
    is checked, as torch.hub checks it."""
    from torch.hub import HASH_REGEX, download_url_to_file

    match = HASH_REGEX.search(path.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        download_url_to_file(url, str(tmp), hash_prefix=match.group(1) if match else None, progress=False)
    except (urllib.error.URLError, OSError, RuntimeError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        what = "the standard FID Inception weights" if not setting else "metrics.inception_weights"
        reason = getattr(exc, "reason", None) or exc
        raise RecipeError(f"{what}: cannot download {url} ({reason}); download it where you can and set "
                          "metrics.inception_weights to the local file") from None
    os.replace(tmp, path)


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


class Inception:
    """torch-fidelity's FID Inception-v3 on one device, with its weights file's digest."""

    def __init__(self, weights: Path, device: torch.device):
        try:  # refuse a pickle that runs code before torch-fidelity loads it with weights_only=False
            torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any failure means the file is not usable weights
            raise RecipeError(f"metrics.inception_weights {str(weights)!r} is not {PICKLE_FREE}: "
                              f"{str(exc).splitlines()[0]}") from None
        try:
            self.net = _extractor_class()("inception-v3-compat", [FEATURES], feature_extractor_weights_path=str(weights))
        except RuntimeError as exc:  # load_state_dict: other keys or shapes
            raise RecipeError(f"metrics.inception_weights {str(weights)!r} does not fit torch-fidelity's "
                              f"FID Inception-v3: {str(exc).splitlines()[0]}") from None
        self.net.to(device)
        self.device, self.digest = device, _digest(weights)

    @staticmethod
    def to_uint8(images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] as the uint8 RGB torch-fidelity takes: rounded, grey repeated to 3 channels."""
        images = (images.float() * 255).round().clamp_(0, 255).to(torch.uint8)
        return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """``(n, 2048)`` float32 pool features of images in [0, 1]."""
        return torch.cat([self.net(self.to_uint8(chunk.to(self.device)))[0] for chunk in images.split(CHUNK)])

    def reference(self, images: torch.Tensor, cache: Path) -> torch.Tensor:
        """The features of a reference set, cached under its and the weights' fingerprint."""
        digest = hashlib.sha256(f"{self.digest}|{tuple(images.shape)}|{images.dtype}".encode())
        digest.update(images.detach().cpu().contiguous().numpy().tobytes())
        path = cache / "inception" / f"reference-{digest.hexdigest()[:24]}.pt"
        if path.is_file():
            return torch.load(path, map_location=self.device, weights_only=True)
        features = self.features(images)
        path.parent.mkdir(parents=True, exist_ok=True)
        save_atomic(features.cpu(), path)
        return features
