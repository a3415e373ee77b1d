"""The typed recipe: every default in one place, short YAML files over it, CLI overrides.

A recipe file names only what differs from the defaults below (StudioGAN style). Loading is
``yaml.safe_load`` into dataclasses; an unknown key is an error naming the closest valid
one, and every value is checked before anything runs, so bad input never starts a run.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class RecipeError(ValueError):
    """A recipe or override the user must fix; the message says how, in one line."""


@dataclass
class DatasetConfig:
    name: str = "digits"  # digits | ring8 | grid25 | mnist | cifar10 | imagefolder
    root: str = ""  # data folder for mnist / cifar10 / imagefolder
    image_size: int = 0  # 0 keeps the dataset's own size; else resize (power of two for dcgan)
    n_train: int = 100_000  # points drawn for the 2D mixtures
    val_fraction: float = 0.2  # validation (images): what stopping, best-epoch selection and the search see
    test_fraction: float = 0.1  # test (images): final and promotion scores only; nothing selects on it
    n_val: int = 2_500  # validation points for the 2D mixtures
    n_test: int = 2_500  # test points for the 2D mixtures
    seed: int = 0  # split and mixture sampling; independent of the training seed


@dataclass
class ModelConfig:
    family: str = "dcgan"  # mlp | dcgan
    z_dim: int = 32
    width: int = 64  # hidden units (mlp) or base channels (dcgan)
    depth: int = 3  # hidden layers (mlp only; dcgan depth follows the image size)
    d_norm: str = "batch"  # discriminator normalization: batch | none | spectral


@dataclass
class TrainConfig:
    max_epochs: int = 100
    batch_size: int = 64
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    loss: str = "nonsaturating"  # nonsaturating | hinge | wgan-gp (see ganstop.losses)
    gp_lambda: float = 10.0  # wgan-gp: weight of the gradient penalty on real-fake interpolates
    r1_gamma: float = 0.0  # R1 penalty gamma/2 * E||grad D(real)||^2 on the discriminator; 0 is off
    d_steps: int = 1  # discriminator updates per generator update
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    channels_last: bool = True  # NHWC for conv models on CUDA
    compile: bool = False  # torch.compile the training step modules (CUDA)
    keep_checkpoints: str = "best_last"  # once the run's model is logged: best_last | all | none
    checkpoint_seconds: float = 300.0  # the full resumable state at most this often (0: every epoch), and at the end


@dataclass
class DecayConfig:
    # LR schedules are stepped once per epoch. `*_final_lr` is the LR at max_epochs as a
    # fraction of the initial one, whatever the schedule, so schedules compare in a search.
    g_schedule: str = "none"  # none | linear | exponential | step | cosine
    d_schedule: str = "none"
    g_final_lr: float = 0.1
    d_final_lr: float = 0.1
    step_every: int = 10  # epochs between drops of the step schedule
    g_weight_decay: float = 0.0  # decoupled (AdamW)
    d_weight_decay: float = 0.0
    d_penalty: str = "none"  # none | l1 | l2: lambda * R(D weights) added to the D loss
    d_penalty_lambda: float = 0.0


@dataclass
class EmaConfig:
    enabled: bool = True
    decay: float = 0.999  # per generator step
    start_epoch: int = 1  # average from this epoch on (earlier weights are mostly noise)


@dataclass
class StoppingConfig:
    # Names and meanings as in Keras/Lightning; see ganstop.stopping for the criteria.
    monitor: str = ""  # empty: the dataset's headline metric (fid for images, mode_error for 2D)
    mode: str = "auto"  # auto (from the metric) | min | max
    criteria: list[str] = field(default_factory=lambda: ["patience"])  # patience | trend | gl | pq | up
    combine: str = "any"  # stop when any / all of the criteria say so
    patience: int = 10  # epochs (as Keras counts) without an improvement larger than min_delta
    min_delta: float | str = 0.0  # a number, or auto: 1 standard error of the difference (min_delta_mode se)
    min_delta_mode: str = "absolute"  # absolute | relative (fraction of the reference) | se (standard errors)
    delta_reference: str = "improvement"  # improvement (Keras, Lightning) | best (every gain moves the bar, Ignite)
    warmup: int = 5  # Keras start_from_epoch: epochs not monitored (only a non-finite value stops there)
    baseline: float | None = None  # the metric must beat this to count as improving
    stopping_threshold: float | None = None  # stop as soon as the metric is this good
    divergence_threshold: float | None = None  # stop as soon as the metric is this bad
    check_finite: bool = True
    window: int = 10  # trend: the Theil-Sen slope is fitted on the checks of the last `window` epochs
    strip: int = 5  # pq, up: Prechelt's strip length, in epochs
    gl_alpha: float = 5.0  # gl: percent worse than the best
    pq_alpha: float = 0.75  # pq: generalization loss per unit of progress
    up_strips: int = 3  # up: successive strips that each end worse


@dataclass
class MetricsConfig:
    names: list[str] = field(default_factory=lambda: ["auto"])  # auto: the dataset's set
    budget: float = 0.04  # checks, and all else the loop does besides training, take at most this share of it
    every: int | None = None  # a fixed check every N epochs (and at the last) instead of the budget
    n_samples: int = 0  # generated samples per check; 0: as many as held-out reals
    kid_subset_size: int = 100
    classifier_epochs: int = 8  # training of the cached feature classifier
    cache_dir: str = ""  # feature-classifier cache; empty: $GANSTOP_CACHE or ~/.cache/ganstop
    inception_weights: str = ""  # path to FID Inception weights; enables inception_fid
    grid_size: int = 64  # images in the logged sample grid
    grid_every: int = 5  # a sample grid every N checks, on every new best, and at the last check


@dataclass
class Recipe:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decay: DecayConfig = field(default_factory=DecayConfig)
    ema: EmaConfig = field(default_factory=EmaConfig)
    stopping: StoppingConfig = field(default_factory=StoppingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    search: dict[str, Any] = field(default_factory=dict)  # consumed by `ganstop tune`

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """``section.key -> value`` for every setting (the search space left out)."""
        return {
            f"{section}.{key}": value
            for section, values in self.to_dict().items()
            if section != "search"
            for key, value in values.items()
        }


CHOICES = {
    "dataset.name": ("digits", "ring8", "grid25", "mnist", "cifar10", "imagefolder"),
    "model.family": ("mlp", "dcgan"),
    "model.d_norm": ("batch", "none", "spectral"),
    "train.loss": ("nonsaturating", "hinge", "wgan-gp"),
    "train.keep_checkpoints": ("best_last", "all", "none"),
    "decay.g_schedule": ("none", "linear", "exponential", "step", "cosine"),
    "decay.d_schedule": ("none", "linear", "exponential", "step", "cosine"),
    "decay.d_penalty": ("none", "l1", "l2"),
    "stopping.mode": ("auto", "min", "max"),
    "stopping.min_delta_mode": ("absolute", "relative", "se"),
    "stopping.delta_reference": ("improvement", "best"),
    "stopping.combine": ("any", "all"),
}
POSITIVE = ("model.z_dim", "model.width", "model.depth", "train.max_epochs", "train.batch_size",
            "train.lr_g", "train.lr_d", "train.d_steps", "decay.step_every", "metrics.grid_every",
            "dataset.n_train", "dataset.n_val", "dataset.n_test", "metrics.kid_subset_size", "metrics.grid_size",
            "metrics.classifier_epochs", "decay.g_final_lr", "decay.d_final_lr", "stopping.strip",
            "stopping.up_strips", "stopping.gl_alpha", "stopping.pq_alpha")
NON_NEGATIVE = ("stopping.patience", "stopping.warmup", "train.r1_gamma", "decay.g_weight_decay",
                "decay.d_weight_decay", "decay.d_penalty_lambda", "metrics.n_samples",
                "dataset.image_size", "ema.start_epoch", "train.checkpoint_seconds",
                "train.gp_lambda")
UNIT_INTERVAL = ("train.beta1", "train.beta2", "ema.decay", "dataset.val_fraction", "dataset.test_fraction")


def _closest(word: str, options) -> str:
    match = difflib.get_close_matches(word, list(options), n=1, cutoff=0.0)
    return f" (did you mean {match[0]!r}?)" if match else ""


def _coerce(path: str, value: Any, hint: Any) -> Any:
    """Turn YAML/CLI values into the field's type, or say which field is wrong."""
    options = [a for a in typing.get_args(hint) if a is not type(None)] if typing.get_origin(hint) in (
        typing.Union, types.UnionType) else [hint]
    optional = type(None) in typing.get_args(hint)
    if len(options) > 1:  # float | str: the first type the value reads as
        for option in options[:-1]:
            try:
                return _coerce(path, value, option)
            except RecipeError:
                pass
    base = options[-1]
    if value is None or (optional and isinstance(value, str) and value.lower() in ("", "none", "null")):
        if optional:
            return None
        raise RecipeError(f"{path} must not be empty")
    origin = typing.get_origin(base)
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("true", "1", "yes", "on"):
                return True
            if str(value).lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if base is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value) if not isinstance(value, str) else int(value.strip())
        if base is float:
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if base is str:
            if isinstance(value, (dict, list)):
                raise ValueError
            return str(value)
        if origin is list:
            items = value if isinstance(value, list) else [v.strip() for v in str(value).split(",") if v.strip()]
            return [str(v) for v in items]
        if origin is dict:
            if not isinstance(value, dict):
                raise ValueError
            return value
    except (TypeError, ValueError):
        pass
    name = getattr(base, "__name__", str(base))
    raise RecipeError(f"{path} must be {'a list' if origin is list else 'a mapping' if origin is dict else name}, not {value!r}")


def _section_hints(section: str) -> dict[str, Any]:
    return typing.get_type_hints(typing.get_type_hints(Recipe)[section])


def set_value(recipe: Recipe, path: str, value: Any) -> None:
    """Set ``section.key`` from a YAML or CLI value, checking the name and the type."""
    section, _, key = path.partition(".")
    sections = [f.name for f in dataclasses.fields(Recipe)]
    if section not in sections:
        raise RecipeError(f"unknown recipe section {section!r}{_closest(section, sections)}")
    if section == "search":
        raise RecipeError("the search section is set in the recipe file, not by an override")
    hints = _section_hints(section)
    if key not in hints:
        raise RecipeError(f"unknown recipe key {path!r}{_closest(key, hints)}")
    setattr(getattr(recipe, section), key, _coerce(path, value, hints[key]))


def parse_override(text: str) -> tuple[str, Any]:
    """``section.key=value`` with the value read as YAML (so 1e-3, true, [a, b] work)."""
    path, sep, raw = text.partition("=")
    if not sep or "." not in path:
        raise RecipeError(f"override {text!r} must look like section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return path.strip(), value


def bundled_dirs() -> list[Path]:
    """Where shipped recipes live: ./recipes, the source checkout, an installed share/ folder."""
    return [Path("recipes"), Path(__file__).resolve().parents[2] / "recipes",
            Path(sys.prefix) / "share" / "ganstop" / "recipes"]


def find(name: str | Path) -> Path:
    """A recipe path as given, or a shipped recipe by name (``ring8-mlp``)."""
    path = Path(name)
    if path.is_file():
        return path
    stem = path.name.removesuffix(".yaml")
    for folder in bundled_dirs():
        if (folder / f"{stem}.yaml").is_file():
            return folder / f"{stem}.yaml"
    known = sorted({p.stem for folder in bundled_dirs() if folder.is_dir() for p in folder.glob("*.yaml")})
    raise RecipeError(f"recipe file {str(name)!r} does not exist{_closest(stem, known)}; shipped: {', '.join(known)}")


def read(path: str | Path) -> dict[str, Any]:
    """The sections of a recipe file (a path or a shipped name), parsed with safe_load."""
    path = find(path)
    try:
        data = yaml.safe_load(path.read_bytes().decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise RecipeError(f"recipe {str(path)!r} is not UTF-8 text (byte {exc.start})") from None
    except OSError as exc:
        raise RecipeError(f"recipe {str(path)!r} cannot be read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise RecipeError(f"recipe {str(path)!r} is not valid YAML{where}") from None
    if data is None:
        raise RecipeError(f"recipe {str(path)!r} is empty; name at least the dataset, or omit --recipe")
    if not isinstance(data, dict):
        raise RecipeError(f"recipe {str(path)!r} must be a mapping of sections")
    return data


def from_dict(data: dict[str, Any], overrides: list[tuple[str, Any]] = (), base: Recipe | None = None) -> Recipe:
    """Defaults (or ``base``), then ``data``'s sections, then overrides; validated as a whole."""
    recipe = copy.deepcopy(base) if base else Recipe()
    for section, values in data.items():
        if section == "search":
            if not isinstance(values, dict):
                raise RecipeError("recipe section 'search' must be a mapping")
            recipe.search = values
            continue
        if not isinstance(values, dict):
            raise RecipeError(f"recipe section {section!r} must be a mapping of keys")
        for key, value in values.items():
            set_value(recipe, f"{section}.{key}", value)
    for key, value in overrides:
        set_value(recipe, key, value)
    validate(recipe)
    return recipe


def load(path: str | Path | None = None, overrides: list[tuple[str, Any]] = (), base: Recipe | None = None) -> Recipe:
    """Defaults (or ``base``), then the recipe file, then overrides; validated as a whole."""
    return from_dict(read(path) if path else {}, overrides, base)


def validate(recipe: Recipe) -> None:
    """Ranges and combinations the dataclass types cannot express."""
    flat = recipe.flat()
    for key, value in flat.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise RecipeError(f"{key} must be a finite number, not {value}")
    for key, options in CHOICES.items():
        if flat[key] not in options:
            raise RecipeError(f"{key} must be one of {', '.join(options)}, not {flat[key]!r}{_closest(str(flat[key]), options)}")
    for key in POSITIVE:
        if not flat[key] > 0:
            raise RecipeError(f"{key} must be > 0, not {flat[key]!r}")
    for key in NON_NEGATIVE:
        if flat[key] < 0:
            raise RecipeError(f"{key} must be >= 0, not {flat[key]!r}")
    for key in UNIT_INTERVAL:
        if not 0 <= flat[key] < 1:
            raise RecipeError(f"{key} must be in [0, 1), not {flat[key]!r}")
    if not 0 < recipe.metrics.budget <= 1:
        raise RecipeError(f"metrics.budget must be a share of training time in (0, 1], not {recipe.metrics.budget!r}")
    if recipe.metrics.every is not None and recipe.metrics.every < 1:
        raise RecipeError(f"metrics.every must be >= 1 epoch, or empty to schedule checks by metrics.budget, "
                          f"not {recipe.metrics.every!r}")
    device = recipe.train.device
    if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
        raise RecipeError(f"train.device must be auto, cpu, cuda or cuda:N, not {device!r}")
    _validate_stopping(recipe)
    if recipe.ema.start_epoch > recipe.train.max_epochs and recipe.ema.enabled:
        raise RecipeError("ema.start_epoch is past train.max_epochs: lower it or set ema.enabled=false")
    if recipe.train.loss == "wgan-gp" and recipe.model.d_norm == "batch":
        raise RecipeError("train.loss=wgan-gp penalizes each sample's gradient, which batch norm mixes across the "
                          "batch: set model.d_norm=none (or spectral)")
    if recipe.decay.d_penalty != "none" and recipe.decay.d_penalty_lambda == 0:
        raise RecipeError(f"decay.d_penalty={recipe.decay.d_penalty} needs decay.d_penalty_lambda > 0")
    held_out = recipe.dataset.val_fraction + recipe.dataset.test_fraction
    if recipe.dataset.val_fraction <= 0 or recipe.dataset.test_fraction <= 0 or held_out > 0.8:
        raise RecipeError(f"dataset.val_fraction and dataset.test_fraction must both be > 0 and leave at least 20% "
                          f"to train on, not {recipe.dataset.val_fraction} + {recipe.dataset.test_fraction}")
    is_points = recipe.dataset.name in ("ring8", "grid25")
    if is_points and recipe.model.family != "mlp":
        raise RecipeError(f"dataset {recipe.dataset.name} is 2D points: set model.family=mlp")
    if recipe.dataset.name in ("mnist", "cifar10", "imagefolder") and not recipe.dataset.root:
        raise RecipeError(f"dataset {recipe.dataset.name} needs dataset.root (the data folder)")
    if recipe.model.family == "dcgan" and recipe.dataset.image_size:
        size = recipe.dataset.image_size
        if size < 8 or size & (size - 1):
            raise RecipeError(f"dataset.image_size must be a power of two >= 8 for dcgan, not {size}")
    # Metric names and the monitor depend on the dataset; metrics.registry checks them.
    from ganstop.metrics import registry

    registry.resolve(recipe)


def _validate_stopping(recipe: Recipe) -> None:
    st = recipe.stopping
    if st.warmup >= recipe.train.max_epochs:
        raise RecipeError(f"stopping.warmup ({st.warmup}) must be below train.max_epochs "
                          f"({recipe.train.max_epochs}), or no epoch is ever monitored")
    if isinstance(st.min_delta, str) and st.min_delta != "auto":
        raise RecipeError(f"stopping.min_delta must be a number >= 0 or auto, not {st.min_delta!r}")
    if not isinstance(st.min_delta, str) and st.min_delta < 0:
        raise RecipeError(f"stopping.min_delta must be >= 0, not {st.min_delta!r}")
    from ganstop.stopping import CRITERIA

    for name in st.criteria:
        if name not in CRITERIA:
            raise RecipeError(f"unknown stopping criterion {name!r}{_closest(name, CRITERIA)}; known: {', '.join(CRITERIA)}")
    if not st.criteria:
        raise RecipeError(f"stopping.criteria must name at least one of {', '.join(CRITERIA)}")
    if st.window < 3:
        raise RecipeError(f"stopping.window must be >= 3 epochs to fit a slope, not {st.window}")


def to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
