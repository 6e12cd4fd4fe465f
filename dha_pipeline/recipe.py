"""Recipes: TOML files loaded into typed, validated dataclasses.

Unknown keys, wrong types and out-of-range values are rejected with the key
path, the offending value and what is allowed (`settings.py`). `[model]` holds the
chosen search space's own settings (`spaces/<space>/settings.py`). `--set a.b=value`
overrides are applied to the raw TOML before validation, so they get the same checks.
Each list of choices is a `Literal` type of `choices.py`, written once.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from dha_pipeline.choices import (ArchInit, AugmentForm, Channels, ClassWeights, Component, CompileMode, Device,
                                  Estimator, FractionData, Mode, OpAffine, PolicySignal, PolicyStart, Precision, Split,
                                  Storage, Switch, TargetMetric)
from dha_pipeline.errors import DhaError
from dha_pipeline.fileio import sha256_json, write_text
from dha_pipeline.formats.registry import WRITABLE
from dha_pipeline.layout import RunLayout
from dha_pipeline.settings import build, setting, table
from dha_pipeline.spaces.settings import ModelSettings, default_settings, settings_class

SEARCH_SECTIONS = ("seed", "data", "model", "train", "augment", "search", "hpo")
"""Recipe settings that change what the search/training stage computes."""



@dataclass
class DataConfig:
    """Where the images come from and how they are shaped and split."""

    dataset: str = setting("digits", help="dataset spec: digits, npz:PATH, imagefolder:PATH, ...")
    image_size: int = setting(32, low=4, high=1024, help="images are resized to this square side")
    channels: Channels = setting("auto", help="'auto' keeps the source's")
    val_fraction: float = setting(0.1, low=0.01, high=0.5, help="train share held out for val")
    test_fraction: float = setting(0.2, low=0.01, high=0.5, help="used when the source has no test split")
    split_seed: int = setting(0, low=0, high=2**31 - 1)
    train_subset: int = setting(0, low=0, high=10**9, help="0 = all; else a stratified subset")
    download: bool = setting(False, help="allow torchvision downloads (cifar/flowers)")
    skip_bad: bool = setting(False, help="skip unreadable images with a report instead of failing")
    storage: Storage = setting("auto", help="files: prepare writes an index and training streams the files through "
                                            "DataLoader workers; auto: files when the pixels would exceed "
                                            "memory_limit_mb")
    memory_limit_mb: int = setting(4096, low=1, high=10**8, help="'auto' storage holds splits up to this in memory")
    eval_crop: float = setting(1.0, low=0.2, high=1.0,
                               help="1 = resize the whole image to a square; < 1 = shorter side to "
                                    "image_size / eval_crop, then the center crop (ImageNet: 0.875)")
    workers: int = setting(-1, low=-1, high=256, help="DataLoader workers per process when streaming; -1 = auto")
    stats_images: int = setting(2000, low=10, high=10**7, help="train images the channel statistics are "
                                                               "measured on when streaming")


@dataclass
class TrainConfig:
    """The optimizer and schedule: SGD with momentum and a cosine learning rate."""

    epochs: int = setting(10, low=1, high=10_000)
    batch_size: int = setting(64, low=1, high=65_536)
    lr: float = setting(0.05, low=1e-6, high=10.0, help="base learning rate, stated for a global batch of lr_batch")
    lr_batch: int = setting(0, low=0, high=1 << 24, help="the global batch lr (and lr_min, hpo.lr_low/high) was tuned "
                                                           "for: a run at another batch uses lr x batch / lr_batch "
                                                           "(linear rule); 0 = lr as given at any batch")
    lr_min: float = setting(0.0, low=0.0, high=10.0)
    warmup_epochs: int = setting(0, low=0, high=1000, help="epochs of linear lr warm-up, fewer than epochs")
    momentum: float = setting(0.9, low=0.0, high=0.999)
    weight_decay: float = setting(3e-4, low=0.0, high=1.0)
    grad_clip: float = setting(5.0, low=0.0, high=1e6, help="0 disables clipping")
    label_smoothing: float = setting(0.0, low=0.0, high=0.5)
    ema_epochs: float = setting(0.0, low=0.0, high=1000.0, help="time constant, in epochs, of an exponential "
                                                                "moving average of the weights over the training "
                                                                "phase, kept when better on val; 0 = off")
    class_weights: ClassWeights = setting("none", help="balanced: each class's training loss weighted by "
                                                       "n_train / (classes x its n_train), for imbalanced data")
    eval_batch_size: int = setting(256, low=1, high=65_536)
    checkpoint_every_steps: int = setting(0, low=0, high=10**9, help="0 = once per epoch")
    precision: Precision = setting("fp32", help="bf16: the forward passes under bfloat16 autocast (weights, "
                                                "gradients, optimizer state, hyper-gradients and losses stay fp32)")
    channels_last: Switch = setting("auto", help="NHWC activations and weights; auto: on CUDA only")
    compile: CompileMode = setting("off", help="torch.compile mode of the training forward where the architecture is "
                                               "fixed (a plain network: manual mode, sequential's second phase); "
                                               "reduce-overhead adds CUDA graphs")


@dataclass
class AugmentConfig:
    """Base augmentation (always on) and the learned policy (component 'da')."""

    crop_padding: int = setting(4, low=0, high=64)
    hflip: bool = setting(True)
    cutout: int = setting(0, low=0, high=512, help="side of the Cutout square, 0 = off")
    resized_crop_min: float = setting(0.08, low=0.01, high=1.0, help="streamed data: the random resized crop "
                                                                     "keeps this share of the image or more")
    start: PolicyStart = setting("pairs", help="the learned policy's form and start: pairs = ordered op pairs, "
                                               "uniform, magnitudes in [0, magnitude_max]; trivial_wide = one op "
                                               "per sample, TrivialAugment Wide exactly until tau moves")
    policy_lr: float = setting(0.05, low=0.0, high=10.0, help="Adam learning rate of tau")
    kl_weight: float = setting(0.0, low=0.0, high=1000.0, help="weight of KL(policy || its start) in tau's loss: "
                                                               "it leaves the start only where its gradient persists")
    signal: PolicySignal = setting("adversarial", help="what moves tau: adversarial = the paper's (choices whose "
                                                       "samples are harder gain), val = choices whose samples' "
                                                       "gradients agree with the clean held-out gradient gain")
    signal_every: int = setting(4, low=1, high=10_000, help="signal val: steps between tau's steps")
    temperature: float = setting(2.0, low=0.05, high=100.0, help="pairs are drawn from softmax(log P / T)")
    magnitude_max: float = setting(3.0, low=0.0, high=10.0, help="pairs start: magnitudes are uniform in [0, this]")
    entropy_floor: float = setting(0.9, low=0.0, high=1.0, help="fraction of the maximum policy entropy")
    trivial_augment: bool = setting(False, help="TrivialAugment Wide on every sample (the fixed-policy anchor)")
    form: AugmentForm = setting("learned_fraction",
                                help="learned_fraction: a share p of each batch gets the policy (learned when "
                                     "fraction_lr > 0); paper: all")
    fraction_start: float = setting(0.5, low=0.0, high=1.0, help="p at the start (learned_fraction form)")
    fraction_lr: float = setting(0.0, low=0.0, high=10.0, help="step of logit(p) per normalized hyper-step; 0 = p "
                                                               "fixed at fraction_start (no hyper-steps of p)")
    fraction_every: int = setting(4, low=1, high=10_000, help="steps between hyper-steps of p")
    fraction_data: FractionData = setting("val", help="clean images p's hypergradient (and tau's, with signal "
                                                      "val) is measured on: val or train")


@dataclass
class SearchConfig:
    """What is searched: the mode, the components, and the ISTA-NAS settings."""

    mode: Mode = setting("joint")
    components: list[Component] = setting(["nas", "da", "hpo"], help="any subset of nas, da, hpo")
    search_epochs: int = setting(10, low=1, high=10_000, help="cap on phase 1 (until every node froze)")
    sparsity: float = setting(0.1, low=0.0, high=10.0, help="lambda of the LASSO recovery")
    freeze_threshold: float = setting(0.02, low=0.0, high=100.0, help="freeze a node when ||x_new - x|| <= this")
    arch_lr: float = setting(0.03, low=0.0, high=10.0, help="Adam learning rate of the codes b")
    init: ArchInit = setting("random", help="where the codes start: a random architecture, or the known design "
                                            "(model.genotype)")
    op_affine: OpAffine = setting("at_freeze", help="when a candidate op's BatchNorm scale and shift start to train: "
                                                    "when its point freezes (its weight carries the scale until then), "
                                                    "or always")
    warmup_epochs: int = setting(0, low=0, high=10_000, help="epochs before the search in which the codes wait "
                                                            "while the network trains their current support")
    warmup_redraw: float = setting(0.0, low=0.0, high=1.0, help="in a warm-up step, the chance that a decision point "
                                                                 "runs a uniformly drawn support instead of the codes' "
                                                                 "current one (1 = all uniform)")
    target: TargetMetric = setting("none", help="a cost the child is chosen to reach: params, macs or latency "
                                                "(batch-1 ms from the latency table)")
    target_value: float = setting(0.0, low=0.0, high=10**13, help="the target; 0 = the cost of the known design "
                                                                  "(model.genotype) at this recipe's size")
    target_band: float = setting(0.0, low=0.0, high=0.9, help="the child's cost lies in [(1 - band) T, T]; "
                                                              "0 = 0.05 (params, macs) or 0.10 (latency)")
    max_params: int = setting(0, low=0, high=10**10, help="0 = no parameter budget")
    max_macs: int = setting(0, low=0, high=10**13, help="0 = no MAC budget")
    max_latency_ms: float = setting(0.0, low=0.0, high=10**6,
                                    help="0 = no latency budget; else batch-1 onnxruntime ms from the latency table")
    latency_table: str = setting("", help="the latency table's JSON file; empty = <runs_dir>/latency_table.json")
    latency_threads: int = setting(1, low=1, high=1024, help="onnxruntime threads the latency table is measured on")
    latency_runs: int = setting(50, low=1, high=100_000, help="timed batch-1 runs per block (median)")
    budget_minutes: float = setting(0.0, low=0.0, high=10**6, help="0 = epochs only; else stop after this")
    tensorboard: Switch = setting("auto", help="TensorBoard event files in runs/<name>/tensorboard/: auto = when the "
                                               "tensorboard package is installed (pip install -e \".[tensorboard]\")")

    @property
    def needs_latency_table(self) -> bool:
        """Is a child's predicted latency tested (a latency budget or target)?"""
        return bool(self.max_latency_ms) or self.target == "latency"


@dataclass
class HpoConfig:
    """Hyper-gradient optimization of the learning rate and weight decay (component 'hpo')."""

    estimator: Estimator = setting("next_batch")
    hyper_lr: float = setting(0.02, low=0.0, high=10.0, help="step of log(lr), log(wd) per normalized hyper-step")
    anchor: float = setting(0.02, low=0.0, high=1.0,
                            help="pull of log(lr), log(wd) back to the recipe's values per hyper-step (share of "
                                 "the gap): eta settles at most a factor exp(hyper_lr / anchor) away; 0 = none")
    lr_low: float = setting(1e-4, low=1e-8, high=10.0)
    lr_high: float = setting(0.5, low=1e-8, high=10.0)
    wd_low: float = setting(1e-6, low=1e-10, high=1.0)
    wd_high: float = setting(1e-2, low=1e-10, high=1.0)


@dataclass
class ExportConfig:
    """Deployable formats and the numeric parity gate."""

    formats: list[str] = setting(list(WRITABLE), choices=WRITABLE, help="the model files export writes from the "
                                                                         "torch child (formats/registry.py)")
    opset: int = setting(18, low=18, high=23)
    parity_samples: int = setting(256, low=1, high=100_000)
    parity_max_abs_diff: float = setting(1e-3, low=0.0, high=1.0)
    parity_min_top1_agreement: float = setting(0.999, low=0.0, high=1.0)
    int8: bool = setting(False, help="also write model.int8.onnx (onnxruntime static QDQ quantization), gated on "
                                     "val top-1")
    int8_calibration_images: int = setting(512, low=1, high=1_000_000,
                                           help="training images that calibrate the int8 activation ranges "
                                                "(export warns under 300)")
    int8_max_drop: float = setting(1.0, low=0.0, high=100.0,
                                   help="the int8 export fails when its val top-1 is more than this many "
                                        "percentage points below fp32")


@dataclass
class EvaluateConfig:
    """Held-out evaluation of the exported model."""

    split: Split = setting("test")
    batch_size: int = setting(256, low=1, high=65_536)
    latency_runs: int = setting(30, low=1, high=100_000)


@dataclass
class Recipe:
    """A whole run: data, model, training, export and evaluation settings."""

    name: str = setting("run", help="names runs/<name>/ and exports/<name>/")
    seed: int = setting(0, low=0, high=2**31 - 1)
    device: Device = setting("auto")
    runs_dir: str = setting("runs")
    exports_dir: str = setting("exports")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelSettings = table(default_settings, settings_class)
    train: TrainConfig = field(default_factory=TrainConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    hpo: HpoConfig = field(default_factory=HpoConfig)
    export: ExportConfig = field(default_factory=ExportConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)

    @property
    def layout(self) -> RunLayout:
        """Every path of this run: `runs/<name>/` and `exports/<name>/`."""
        return RunLayout.of(self.runs_dir, self.exports_dir, self.name)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict of every setting (the resolved recipe; `[model]` holds the space's keys)."""
        return dataclasses.asdict(self)

    def section_sha256(self, *sections: str) -> str:
        """sha256 of the named top-level settings or sections, for stage skipping."""
        full = self.to_dict()
        return sha256_json({key: full[key] for key in sections})

    @property
    def sha256(self) -> str:
        """sha256 of the whole resolved recipe."""
        return sha256_json(self.to_dict())


def _parse_override_value(text: str) -> Any:
    """Parse the value of `--set key=value` as TOML, or as a bare string if it is not TOML."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `a.b=value` overrides to a raw recipe dict (in place) and return it."""
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise DhaError(f"--set '{item}' is not of the form key=value", "write e.g. --set train.epochs=5")
        parts = key.split(".")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise DhaError(f"--set '{item}': '{part}' is a value, not a section")
            node = child
        node[parts[-1]] = _parse_override_value(value.strip())
    return raw


def recipe_from_dict(raw: dict[str, Any]) -> Recipe:
    """Validate a raw dict into a Recipe."""
    recipe = build(Recipe, raw, "")
    _check_consistency(recipe)
    if not recipe.name or any(c in recipe.name for c in "/\\") or recipe.name.startswith("."):
        raise DhaError(f"recipe key 'name' = {recipe.name!r} is not a valid run name",
                       "use letters, digits, '-' and '_' only")
    return recipe


def tensorboard_installed() -> bool:
    """Is the tensorboard package installed (what torch's SummaryWriter needs, and `search.tensorboard` asks)?"""
    return importlib.util.find_spec("tensorboard") is not None


def _check_consistency(recipe: Recipe) -> None:
    """Rules that span several keys."""
    search = recipe.search
    if len(set(search.components)) != len(search.components):
        raise DhaError(f"recipe key 'search.components' = {search.components} repeats a component")
    if search.mode == "manual" and "nas" in search.components:
        raise DhaError("search.mode = 'manual' trains a known genotype, so 'nas' cannot be a component",
                       "drop 'nas' from search.components, or use mode 'joint'")
    if search.mode != "manual" and "nas" not in search.components:
        raise DhaError(f"search.mode = '{search.mode}' searches the architecture, so it needs 'nas' in components",
                       "add 'nas' to search.components, or use mode 'manual'")
    recipe.model.validate()
    if "da" in search.components and recipe.augment.trivial_augment and recipe.augment.start == "trivial_wide":
        raise DhaError("augment.trivial_augment and augment.start = 'trivial_wide' would both apply TrivialAugment "
                       "Wide to a sample", "keep the learned policy's start and set augment.trivial_augment = false")
    if search.tensorboard == "on" and not tensorboard_installed():
        raise DhaError("search.tensorboard = 'on' but the tensorboard package is not installed",
                       'pip install -e ".[tensorboard]", or set search.tensorboard = "auto"')
    if recipe.train.warmup_epochs and recipe.train.warmup_epochs >= recipe.train.epochs:
        raise DhaError(f"train.warmup_epochs = {recipe.train.warmup_epochs} is not below train.epochs = "
                       f"{recipe.train.epochs}: the learning rate would rise for the whole run",
                       f"set train.warmup_epochs below {recipe.train.epochs} (e.g. --set train.warmup_epochs=0)")
    if recipe.export.int8 and "onnx" not in recipe.export.formats:
        raise DhaError(f"export.int8 quantizes the ONNX model, but export.formats = {recipe.export.formats} has no "
                       "'onnx'", "add onnx to export.formats (--format), or drop export.int8 (--int8)")
    for low, high in (("lr_low", "lr_high"), ("wd_low", "wd_high")):
        if getattr(recipe.hpo, low) > getattr(recipe.hpo, high):
            raise DhaError(f"recipe keys 'hpo.{low}' > 'hpo.{high}'", "make the lower bound the smaller one")
    if "hpo" in search.components and not recipe.hpo.lr_low <= recipe.train.lr <= recipe.hpo.lr_high:
        raise DhaError(f"recipe key 'train.lr' = {recipe.train.lr} lies outside [hpo.lr_low, hpo.lr_high] = "
                       f"[{recipe.hpo.lr_low}, {recipe.hpo.lr_high}]", "widen the bounds or change train.lr")


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe file."""
    path = Path(path)
    if not path.is_file():
        raise DhaError(f"recipe file '{path}' does not exist", "check the path, e.g. recipes/digits_quickstart.toml")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise DhaError(f"recipe file '{path}' is not valid TOML ({exc})", "fix the syntax at that line") from None
    except UnicodeDecodeError:
        raise DhaError(f"recipe file '{path}' is not UTF-8 text", "pass a .toml recipe") from None
    return recipe_from_dict(apply_overrides(raw, list(overrides or [])))


def recipe_to_toml(recipe: Recipe) -> str:
    """The resolved recipe as TOML text."""
    return tomli_w.dumps(recipe.to_dict())


def save_resolved(recipe: Recipe) -> Path:
    """Write the run's `recipe.resolved.toml` and `recipe.sha256`."""
    layout = recipe.layout
    write_text(layout.resolved_recipe, recipe_to_toml(recipe))
    write_text(layout.recipe_sha256, recipe.sha256 + "\n")
    return layout.resolved_recipe

