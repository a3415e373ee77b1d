"""The typed recipe: every default in one place, short YAML files over it, CLI overrides.

A recipe file names only what differs from the defaults below (StudioGAN style). Loading is
``yaml.safe_load`` into pydantic models, which check each value's type and range as it is set;
an unknown key is an error naming the closest valid one, and the recipe is validated as a whole
before anything runs, so bad input never starts a run. Plugins add sections of their own
(``ganstop.plugins``): a section named after the plugin, checked by the plugin's pydantic model.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, ValidationInfo,
                      field_validator)

from ganstop import plugins
from ganstop.errors import RecipeError, suggest
from ganstop.metrics import registry
from ganstop.stopping.criteria import CRITERIA


def _unset(value: Any) -> Any:
    """An empty value (``--set stopping.baseline=``) unsets an optional key."""
    return None if value == "" else value


def _comma_list(value: Any) -> Any:
    """``--set stopping.criteria=patience,trend`` as well as a YAML list."""
    return [v.strip() for v in value.split(",") if v.strip()] if isinstance(value, str) else value


def _min_delta(value: Any) -> Any:
    if value == "auto":
        return value
    try:
        if isinstance(value, bool):
            raise ValueError
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError("must be a number >= 0 or auto") from None
    if number < 0:
        raise ValueError("must be >= 0")
    return number


def _within(test, message: str):
    """A range check whose refusal says what the value means, not only its bounds."""

    def check(value: Any) -> Any:
        if value is not None and not test(value):
            raise ValueError(message)
        return value

    return AfterValidator(check)


Positive = Annotated[int, Field(gt=0)]
Count = Annotated[int, Field(ge=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
NonNegative = Annotated[float, Field(ge=0)]
Share = Annotated[float, _within(lambda v: 0 <= v < 1, "must be in [0, 1)")]
Names = Annotated[list[str], BeforeValidator(_comma_list)]
Unset = BeforeValidator(_unset)
Schedule = Literal["none", "linear", "exponential", "step", "cosine"]


class Section(BaseModel):
    """A recipe section: unknown keys refused, every assignment validated, numbers read as text
    where text is wanted (``dataset.root: 2024``), no infinities or NaNs."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, validate_default=True,
                              coerce_numbers_to_str=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_numbers(cls, value: Any, info: ValidationInfo) -> Any:
        """pydantic's lax mode reads True as 1: a number field, built-in or a plugin's, refuses
        booleans (``int | None`` included; a union with text, like ``min_delta``, checks its own)."""
        if isinstance(value, bool):
            annotation = cls.model_fields[info.field_name].annotation
            kinds = set(get_args(annotation) or [annotation]) - {type(None)}
            if kinds in ({int}, {float}):
                raise ValueError(f"must be {kinds.pop().__name__}")
        return value


class DatasetConfig(Section):
    name: str = "digits"  # an installed dataset plugin: digits | ring8 | grid25 | mnist | cifar10 | imagefolder
    root: str = ""  # data folder for mnist / cifar10 / imagefolder
    image_size: Count = 0  # 0 keeps the dataset's own size; else resize (power of two for dcgan)
    n_train: Positive = 100_000  # points drawn for the 2D mixtures
    val_fraction: Share = 0.2  # validation (images): what stopping, best-epoch selection and the search see
    test_fraction: Share = 0.1  # test (images): final and promotion scores only; nothing selects on it
    n_val: Positive = 2_500  # validation points for the 2D mixtures
    n_test: Positive = 2_500  # test points for the 2D mixtures
    seed: int = 0  # split and mixture sampling; independent of the training seed


class ModelConfig(Section):
    family: str = "dcgan"  # an installed model plugin: mlp | dcgan
    z_dim: Positive = 32
    width: Positive = 64  # hidden units (mlp) or base channels (dcgan)
    depth: Positive = 3  # hidden layers (mlp only; dcgan depth follows the image size)
    d_norm: Literal["batch", "none", "spectral"] = "batch"  # discriminator normalization


class TrainConfig(Section):
    max_epochs: Positive = 100
    batch_size: Positive = 64  # the global batch: split over the ranks of a data-parallel run
    lr_g: PositiveFloat = 2e-4
    lr_d: PositiveFloat = 2e-4
    beta1: Share = 0.5
    beta2: Share = 0.999
    loss: str = "nonsaturating"  # an installed loss plugin: nonsaturating | hinge | wgan-gp
    gp_lambda: NonNegative = 10.0  # weight of the objective's own penalty (wgan-gp: the gradient penalty)
    r1_gamma: NonNegative = 0.0  # R1 penalty gamma/2 * E||grad D(real)||^2 on the discriminator; 0 is off
    d_steps: Positive = 1  # discriminator updates per generator update
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA; ignored on CPU
    channels_last: bool = True  # NHWC for conv models on CUDA
    compile: bool = False  # torch.compile G and D (D stays eager under R1 or WGAN-GP: no double backward)
    sync_batchnorm: bool = False  # data parallel: batch-norm statistics over the global batch, not each rank's
    keep_checkpoints: Literal["best_last", "all", "none"] = "best_last"  # once the run's model is logged
    checkpoint_seconds: NonNegative = 300.0  # the full resumable state at most this often (0: every epoch), and at the end


class DecayConfig(Section):
    # LR schedules are stepped once per epoch. `*_final_lr` is the LR at max_epochs as a
    # fraction of the initial one, whatever the schedule, so schedules compare in a search.
    g_schedule: Schedule = "none"
    d_schedule: Schedule = "none"
    g_final_lr: PositiveFloat = 0.1
    d_final_lr: PositiveFloat = 0.1
    step_every: Positive = 10  # epochs between drops of the step schedule
    g_weight_decay: NonNegative = 0.0  # decoupled (AdamW)
    d_weight_decay: NonNegative = 0.0
    d_penalty: Literal["none", "l1", "l2"] = "none"  # lambda * R(D weights) added to the D loss
    d_penalty_lambda: NonNegative = 0.0


class EmaConfig(Section):
    enabled: bool = True
    decay: Share = 0.999  # per generator step
    start_epoch: Count = 1  # average from this epoch on (earlier weights are mostly noise)


class StoppingConfig(Section):
    # Names and meanings as in Keras/Lightning; see ganstop.stopping.criteria.
    monitor: str = ""  # empty: the dataset's headline metric (fid for images, mode_error for 2D)
    mode: Literal["auto", "min", "max"] = "auto"  # auto: from the metric
    # forecast (budget-aware, the default) | patience | trend | gl | pq | up
    criteria: Names = ["forecast", "patience"]
    combine: Literal["any", "all"] = "any"  # stop when any / all of the criteria say so
    # forecast: the share of the metric given up to save the rest of the budget (0.05: within 5%)
    tolerance: Annotated[float, _within(lambda v: 0 <= v < 1, "must be a share of the metric in [0, 1)")] = 0.05
    # forecast: stop once a gain beyond the tolerance is less likely than this
    confidence: Annotated[float, _within(lambda v: 0 < v < 1, "must be a probability in (0, 1)")] = 0.1
    # forecast: the curve is fitted on the checks of this latest share of the epochs so far
    forecast_window: Annotated[float, _within(lambda v: 0 < v <= 1, "must be a share of the epochs in (0, 1]")] = 0.5
    # epochs (as Keras counts) without an improvement larger than min_delta; empty: no patience rule
    patience: Annotated[Count | None, Unset] = None
    # patience grows with the run: after an improvement at epoch e, no stop before epoch patience_increase * e
    patience_increase: Annotated[float, _within(lambda v: v >= 1, "must be >= 1 (1: a fixed patience)")] = 1.0
    # a number, or auto: 1 standard error of the difference (min_delta_mode se)
    min_delta: Annotated[float | Literal["auto"], BeforeValidator(_min_delta)] = 0.0
    min_delta_mode: Literal["absolute", "relative", "se"] = "absolute"  # relative: fraction of the reference
    delta_reference: Literal["improvement", "best"] = "improvement"  # best: every gain moves the bar (Ignite)
    warmup: Count = 0  # Keras start_from_epoch: epochs not monitored (only a non-finite value stops there)
    baseline: Annotated[float | None, Unset] = None  # the metric must beat this to count as improving
    stopping_threshold: Annotated[float | None, Unset] = None  # stop as soon as the metric is this good
    divergence_threshold: Annotated[float | None, Unset] = None  # stop as soon as the metric is this bad
    check_finite: bool = True
    window: Annotated[int, Field(ge=3)] = 10  # trend: Theil-Sen slope over the last `window` epochs
    strip: Positive = 5  # pq, up: Prechelt's strip length, in epochs
    gl_alpha: PositiveFloat = 5.0  # gl: percent worse than the best
    pq_alpha: PositiveFloat = 0.75  # pq: generalization loss per unit of progress
    up_strips: Positive = 3  # up: successive strips that each end worse


class MetricsConfig(Section):
    names: Names = ["auto"]  # auto: the dataset's set
    # checks and all else besides training: this share of it
    budget: Annotated[float, _within(lambda v: 0 < v <= 1, "must be a share of training time in (0, 1]")] = 0.04
    # a fixed check every N epochs (and at the last)
    every: Annotated[int | None, Unset, _within(lambda v: v >= 1, "must be >= 1 epoch, or empty")] = None
    # the longest gap between two checks, as a share of train.max_epochs: the budget gives way to it
    max_gap: Annotated[float, _within(lambda v: 0 < v <= 1, "must be a share of train.max_epochs in (0, 1]")] = 0.05
    n_samples: Count = 0  # generated samples per check; 0: as many as held-out reals
    kid_subset_size: Positive = 100
    classifier_epochs: Positive = 8  # training of the cached feature classifier
    cache_dir: str = ""  # feature-classifier cache; empty: $GANSTOP_CACHE or ~/.cache/ganstop
    # FID Inception weights for inception_fid/inception_kid: empty, torch-fidelity's release; a URL; or a file
    inception_weights: str = ""
    features: Literal["classifier", "inception"] = "classifier"  # the network prdc measures on
    grid_size: Positive = 64  # images in the logged sample grid
    grid_every: Positive = 5  # a sample grid every N checks, on every new best, and at the last check


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    decay: DecayConfig = Field(default_factory=DecayConfig)
    ema: EmaConfig = Field(default_factory=EmaConfig)
    stopping: StoppingConfig = Field(default_factory=StoppingConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    search: dict[str, Any] = Field(default_factory=dict)  # consumed by `ganstop tune`
    plugins: dict[str, Any] = Field(default_factory=dict)  # plugin name -> its options model (its own section)

    def to_dict(self) -> dict[str, Any]:
        """Sections as a recipe file writes them: plugin sections at the top level."""
        out = self.model_dump(exclude={"plugins"})
        out.update({name: options.model_dump() for name, options in self.plugins.items()})
        return out

    def flat(self) -> dict[str, Any]:
        """``section.key -> value`` for every setting (the search space left out)."""
        return {f"{section}.{key}": value for section, values in self.to_dict().items() if section != "search"
                for key, value in values.items()}

    def options(self, name: str) -> Any:
        """A plugin's options (its pydantic model), defaults filled in by validation."""
        return self.plugins.get(name)


SECTIONS = [name for name in Recipe.model_fields if name != "plugins"]
MESSAGES = {  # pydantic error type -> what the one-line error says after the key
    "int_parsing": "must be int", "int_type": "must be int", "int_from_float": "must be int",
    "float_parsing": "must be float", "float_type": "must be float", "bool_parsing": "must be bool",
    "bool_type": "must be bool", "string_type": "must be str", "list_type": "must be a list",
    "finite_number": "must be a finite number", "missing": "must be set",
}


def _message(path: str, error: dict, value: Any) -> str:
    """One pydantic error as one line that names the key and the fix."""
    kind, ctx = error["type"], error.get("ctx", {})
    if kind in MESSAGES:
        text = MESSAGES[kind]
    elif kind in ("greater_than", "greater_than_equal", "less_than", "less_than_equal"):
        ops = {"greater_than": ("gt", ">"), "greater_than_equal": ("ge", ">="),
               "less_than": ("lt", "<"), "less_than_equal": ("le", "<=")}
        key, op = ops[kind]
        text = f"must be {op} {ctx[key]}"
    elif kind == "literal_error":
        options = [o.strip(" '") for o in ctx["expected"].replace(" or ", ", ").split(",")]
        return f"{path} must be one of {', '.join(options)}, not {value!r}{suggest(str(value), options)}"
    elif kind == "value_error":
        text = str(ctx.get("error", error["msg"]))
    else:
        text = error["msg"].lower()
    text = " ".join(text.split())
    return f"{path} {text}, not {value!r}"


def _section(recipe: Recipe, section: str) -> BaseModel:
    """The model a ``section.key`` path sets: a built-in section or an installed plugin's."""
    if section in SECTIONS and section != "search":
        return getattr(recipe, section)
    if section == "search":
        raise RecipeError("the search section is set in the recipe file, not by an override")
    if section not in recipe.plugins:
        options = plugins.option_model(section)
        if options is None:
            known = SECTIONS + sorted(plugins.option_models())
            raise RecipeError(f"unknown recipe section {section!r}{suggest(section, known)}")
        recipe.plugins[section] = options()
    return recipe.plugins[section]


def set_value(recipe: Recipe, path: str, value: Any) -> None:
    """Set ``section.key`` from a YAML or CLI value, checking the name, type and range."""
    section, _, key = path.partition(".")
    target = _section(recipe, section)
    fields = type(target).model_fields
    if key not in fields:
        raise RecipeError(f"unknown recipe key {path!r}{suggest(key, fields)}")
    try:
        setattr(target, key, value)
    except ValidationError as exc:
        raise RecipeError(_message(path, exc.errors()[0], value)) from None


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
    raise RecipeError(f"recipe file {str(name)!r} does not exist{suggest(stem, known)}; shipped: {', '.join(known)}")


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
            raise RecipeError(f"recipe section {str(section)!r} must be a mapping of keys")
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
    """Combinations no single field can check: plugins that exist and fit the data, metrics that
    fit the dataset, a stopper that can ever act."""
    device = recipe.train.device
    if not (device in ("auto", "cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())):
        raise RecipeError(f"train.device must be auto, cpu, cuda or cuda:N, not {device!r}")
    dataset = plugins.load("datasets", recipe.dataset.name)
    family = plugins.load("models", recipe.model.family)
    loss = plugins.load("losses", recipe.train.loss)
    for name, spec in ((recipe.dataset.name, dataset), (recipe.model.family, family), (recipe.train.loss, loss)):
        if spec.options is not None and name not in recipe.plugins:
            recipe.plugins[name] = spec.options()  # its defaults, logged with the run's params
    if dataset.kind not in family.kinds:
        fitting = [n for n in plugins.names("models") if dataset.kind in plugins.load("models", n).kinds]
        raise RecipeError(f"dataset {recipe.dataset.name} is {'2D points' if dataset.kind == 'points' else 'images'} "
                          f"and model family {recipe.model.family} models {', '.join(family.kinds)}: "
                          f"set model.family={' or '.join(fitting)}")
    if dataset.needs_root and not recipe.dataset.root:
        raise RecipeError(f"dataset {recipe.dataset.name} needs dataset.root (the data folder)")
    _validate_stopping(recipe)
    if recipe.ema.start_epoch > recipe.train.max_epochs and recipe.ema.enabled:
        raise RecipeError("ema.start_epoch is past train.max_epochs: lower it or set ema.enabled=false")
    if loss.penalty is not None and recipe.model.d_norm == "batch":
        raise RecipeError(f"train.loss={recipe.train.loss} penalizes each sample's gradient, which batch norm mixes "
                          f"across the batch: set model.d_norm=none (or spectral)")
    if recipe.decay.d_penalty != "none" and recipe.decay.d_penalty_lambda == 0:
        raise RecipeError(f"decay.d_penalty={recipe.decay.d_penalty} needs decay.d_penalty_lambda > 0")
    held_out = recipe.dataset.val_fraction + recipe.dataset.test_fraction
    if recipe.dataset.val_fraction <= 0 or recipe.dataset.test_fraction <= 0 or held_out > 0.8:
        raise RecipeError(f"dataset.val_fraction and dataset.test_fraction must both be > 0 and leave at least 20% "
                          f"to train on, not {recipe.dataset.val_fraction} + {recipe.dataset.test_fraction}")
    if recipe.model.family == "dcgan" and recipe.dataset.image_size:
        size = recipe.dataset.image_size
        if size < 8 or size & (size - 1):
            raise RecipeError(f"dataset.image_size must be a power of two >= 8 for dcgan, not {size}")
    registry.resolve(recipe)  # metric names and the monitor depend on the dataset


def _validate_stopping(recipe: Recipe) -> None:
    st = recipe.stopping
    if st.warmup >= recipe.train.max_epochs:
        raise RecipeError(f"stopping.warmup ({st.warmup}) must be below train.max_epochs "
                          f"({recipe.train.max_epochs}), or no epoch is ever monitored")
    for name in st.criteria:
        if name not in CRITERIA:
            raise RecipeError(f"unknown stopping criterion {name!r}{suggest(name, CRITERIA)}; known: {', '.join(CRITERIA)}")
    if not st.criteria:
        raise RecipeError(f"stopping.criteria must name at least one of {', '.join(CRITERIA)}")


def to_yaml(recipe: Recipe) -> str:
    return yaml.safe_dump(recipe.to_dict(), sort_keys=False)
