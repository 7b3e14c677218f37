"""Run configuration: frozen dataclasses, TOML loading, dotted overrides and a stable hash.

A run is ``base config + {dotted.key: value}`` overrides. The CLI's ``--set``, a TOML file and a search
trial all produce the same override mapping and go through :func:`with_overrides`; nothing else configures
a run. Sizes that can be derived (a reader's output size, the image size of a task) are not fields here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attention import AttentionError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class DataConfig:
    """Which task and how its images are made (RAM paper, sec. 4.1); see docs/data.md."""

    task: str = "mnist"
    """``mnist`` (28x28 centred), ``translated`` or ``cluttered`` (classification), or ``catch`` (the game
    of RAM sec. 4.2, configured in ``game``; docs/catch.md)."""
    canvas_size: int | None = None
    """Side of the square canvas; None means the task's default (28 for mnist, 24 for catch's screen, 60
    otherwise)."""
    clutter_count: int | None = None
    """Pieces of clutter; None means the paper's setting (4 on 60x60, 8 on 100x100; 0 without clutter)."""
    clutter_size: int = 8
    """Side of each square clutter piece cut from another digit."""
    validation_seed: int = 1
    """Seed of the fixed validation set (placements and clutter; catch: the validation games)."""
    test_seed: int = 2
    """Seed of the fixed test set (catch: the test games); change it to draw an independent test set of the
    same distribution."""
    train_limit: int | None = None
    """Train on only the first N training images (smoke runs, tests); None for all 50,000. Catch: at most
    N training games."""
    eval_limit: int | None = None
    """Validate and test on only the first N digits of each fixed set (smoke runs, tests); None for all
    10,000. Part of a run's identity: the validation set chooses the kept weights. Catch: at most N
    validation and N test games."""


@dataclass(frozen=True)
class ReaderConfig:
    """How the model looks at the image (the plug-in seam: see attention/readers)."""

    name: str = "retina"
    """``retina`` (RAM glimpse sensor), ``filterbank`` (DRAW reader)."""
    patch_size: int = 8
    """Retina: side g_w of the first (finest) patch; every patch is resized to this."""
    num_scales: int = 1
    """Retina: number k of patches, each twice as wide as the previous."""
    grid_size: int = 12
    """Filterbank: N, the side of the N x N grid of Gaussian filters."""


@dataclass(frozen=True)
class GlimpseNetConfig:
    """RAM sec. 4: g = Rect(Linear(h_g) + Linear(h_l)), h_g = Rect(Linear(rho)), h_l = Rect(Linear(l))."""

    image_hidden: int = 128
    location_hidden: int = 128
    output_size: int = 256


@dataclass(frozen=True)
class CoreConfig:
    name: str = "rnn"
    """``rnn`` (rectifier RNN, the paper's classification core) or ``lstm``."""
    hidden_size: int = 256


@dataclass(frozen=True)
class WhereConfig:
    """The where-head: how the next location (or filterbank window) is chosen from the core state."""

    policy: str = "gaussian"
    """``gaussian`` (RAM: fixed-std Gaussian, REINFORCE), ``random`` (uniform, the random-glimpse
    baseline), ``deterministic`` (soft attention, trained by backprop)."""
    std: float = 0.1
    """Standard deviation of the Gaussian policy, in the [-1, 1] location units."""
    bound: str = "clamp"
    """How locations stay inside [-1, 1]. Gaussian policy: ``clamp`` (tanh mean, sample clamped; the
    log-probability is of the clamped location, the one actually used, under the censored Gaussian) or
    ``none`` (linear mean, unbounded sample; the retina reads zeros outside the image). Deterministic head:
    ``tanh`` squashes the window's centre into [-1, 1]; ``clamp`` and ``none`` leave DRAW's linear head."""
    initial: str = "random"
    """First glimpse of a retina: ``random`` (uniform, as in the paper) or ``center``."""


@dataclass(frozen=True)
class RoutingConfig:
    """Which parameters each auxiliary loss may reach (the literature disagrees; see docs/ram.md).

    The classifier's cross-entropy always reaches the classifier, core and glimpse network, and never the
    location head (locations are samples). REINFORCE always reaches the location head.
    """

    reinforce_reaches_core: bool = False
    """If True, REINFORCE also trains the core and glimpse network through h_t (the paper's literal
    gradient of log pi w.r.t. all of theta). If False the location head reads a detached h_t."""
    baseline_reaches_core: bool = False
    """If True, the baseline's squared error also trains the core through h_t. If False the baseline head
    reads a detached h_t, so only the baseline head fits the return."""


@dataclass(frozen=True)
class ModelConfig:
    name: str = "ram"
    """``ram`` (recurrent attention; reader chosen by ``reader.name``), ``fc`` or ``cnn`` baselines."""
    num_glimpses: int = 6
    reader: ReaderConfig = field(default_factory=ReaderConfig)
    glimpse: GlimpseNetConfig = field(default_factory=GlimpseNetConfig)
    core: CoreConfig = field(default_factory=CoreConfig)
    where: WhereConfig = field(default_factory=WhereConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    fc_hidden: tuple[int, ...] = (256, 256)
    """FC baseline: rectifier layer widths (paper: 64 or 256, two layers)."""
    cnn_filters: int = 8
    """CNN baseline: filters of the single convolution (paper: 8; 16 on translated 60x60)."""
    cnn_kernel: int = 10
    cnn_stride: int = 5
    cnn_hidden: int = 256
    """CNN baseline: width of the rectifier layer after the convolution (paper: 256; 86 on 100x100)."""


@dataclass(frozen=True)
class TrainConfig:
    optimizer: str = "adam"
    """``adam`` or ``sgd`` (with ``momentum``; the paper used SGD with momentum 0.9)."""
    learning_rate: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    """``constant``, ``linear`` (to ``min_lr_fraction`` at the end), ``cosine``, ``step`` (multiply by
    ``step_gamma`` every ``step_epochs``) or ``plateau`` (multiply by ``step_gamma`` after
    ``plateau_patience``
    epochs without a better validation error)."""
    min_lr_fraction: float = 0.0
    step_epochs: int = 30
    step_gamma: float = 0.1
    plateau_patience: int = 5
    batch_size: int = 128
    """Images per step; for a game, games played at once (one whole game each per step)."""
    epochs: int = 50
    """Passes over the training images; a game counts ``game.frames`` in intervals instead."""
    time_budget_s: float | None = None
    """Stop after this many seconds of training (checked between epochs); None for no limit."""
    early_stopping_patience: int | None = None
    """Stop after this many epochs without a better validation error; None to never stop early."""
    grad_clip: float | None = None
    """Clip the global gradient norm to this value; None for no clipping."""
    reinforce_weight: float = 1.0
    """Coefficient of the REINFORCE term in the hybrid loss."""
    baseline_weight: float = 1.0
    """Coefficient of the baseline's squared error in the hybrid loss."""
    entropy_weight: float = 0.0
    """A game: coefficient of a bonus for the action policy's entropy (summed over a game's frames), which
    keeps the softmax from collapsing onto one action early in training. Not in the paper; 0 leaves it
    out. Image tasks ignore it."""
    seed: int = 0
    eval_batch_size: int = 1000
    compile: bool = False
    """torch.compile part of each training step (slow first steps; results equal to eager up to float
    rounding): a soft reader's whole unroll, a retina's sensor (a sampling policy breaks a whole-unroll
    graph). Off by default: ``attention bench`` measures both; it pays off on a GPU, where the per-operation
    cost of a small recurrent model bounds a step."""
    init_from: str | None = None
    """Start from the weights of a finished run (its directory or its model.pt) instead of a fresh draw, e.g.
    a curriculum from an easier task; the model must have the same shapes. The digest of those weights is
    stored in result.json. None: start from the seed's fresh weights."""


@dataclass(frozen=True)
class EvalConfig:
    sampled_repeats: int = 1
    """Passes over the test set with sampled locations (the reported sampled error is their mean)."""


@dataclass(frozen=True)
class GameConfig:
    """A game task (``data.task = "catch"``): its training budget in frames and its evaluation. A frame is
    one agent step on one screen; ``train.batch_size`` games are played at once, one game per batch row.
    Ignored by the image tasks, which count ``train.epochs`` instead."""

    frames: int = 20_000_000
    """Training budget: frames seen, summed over all games (the paper trained for 20 million). Training
    runs whole evaluation intervals and never more frames than this, except that it trains at least one
    batch of games (a smaller budget, as in a smoke run, is rounded up to one batch)."""
    frames_per_interval: int = 500_000
    """Frames between evaluations: the trainer's 'epoch' (a metrics row, a checkpoint, model selection),
    rounded up to whole batches of games."""
    validation_games: int = 2000
    """Fresh games (from ``data.validation_seed``) played with sampled policies after each interval; their
    catch rate selects the best weights."""
    test_games: int = 10_000
    """Fresh games (from ``data.test_seed``) of the final evaluation, played once with the greedy policies
    and once with the sampled ones."""


@dataclass(frozen=True)
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    game: GameConfig = field(default_factory=GameConfig)


# ----------------------------------------------------------------------------------------------------------
# Conversion between nested dicts and the dataclasses, with type checking and helpful unknown-key errors.


def to_dict(config: Any) -> dict[str, Any]:
    """Nested plain-dict form (tuples become lists), as written to config.json."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


# Words that mean "no value" for an optional field (TOML has no null).
NULLS = ("none", "null")


def _coerce(value: Any, hint: Any, key: str) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if type(None) in options and (value is None or (isinstance(value, str) and value.lower() in NULLS)):
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except AttentionError as error:
                errors.append(str(error))
        raise AttentionError(errors[0] if errors else f"config key '{key}' cannot be {value!r}")
    if origin is tuple:
        (item_hint, _ellipsis) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise AttentionError(f"config key '{key}' must be a list, got {value!r}")
        return tuple(_coerce(v, item_hint, key) for v in value)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise AttentionError(f"config key '{key}' is a section; set its fields, e.g. '{key}.<field>'")
        return from_dict(hint, value, prefix=key + ".")
    if hint is bool:
        if not isinstance(value, bool):
            raise AttentionError(f"config key '{key}' must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise AttentionError(f"config key '{key}' must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise AttentionError(f"config key '{key}' must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise AttentionError(f"config key '{key}' must be a string, got {value!r}")
        return value
    raise AttentionError(f"config key '{key}' has an unsupported type {hint!r}")  # pragma: no cover


def from_dict(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass ``cls`` from a nested dict; unknown keys are refused with the list of known ones."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise AttentionError(
            f"unknown config key '{prefix}{unknown[0]}'; known keys here: "
            + ", ".join(prefix + n for n in names)
        )
    kwargs = {name: _coerce(value, hints[name], prefix + name) for name, value in values.items()}
    return cls(**kwargs)


def parse_value(text: str) -> Any:
    """Parse a ``--set`` value as a TOML value (numbers, booleans, lists, quoted strings); bare words are
    strings. A bare ``none``/``null`` becomes None where the field allows None (see ``_coerce``)."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def with_overrides(config: Config, overrides: dict[str, Any]) -> Config:
    """Return ``config`` with each ``{"section.field": value}`` applied, type-checked and validated."""
    tree = to_dict(config)
    for dotted, value in overrides.items():
        node = tree
        parts = dotted.split(".")
        for depth, part in enumerate(parts[:-1]):
            if not isinstance(node.get(part), dict):
                where = ".".join(parts[: depth + 1])
                raise AttentionError(f"unknown config section '{where}' in override '{dotted}'")
            node = node[part]
        if parts[-1] not in node:
            known = ", ".join(sorted(node))
            raise AttentionError(f"unknown config key '{dotted}'; known keys in that section: {known}")
        if isinstance(node[parts[-1]], dict):
            raise AttentionError(f"'{dotted}' is a section; override one of its fields instead")
        node[parts[-1]] = value
    return from_dict(Config, tree)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dict -> ``{"a.b.c": value}``, the override form."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, prefix + key + "."))
        else:
            flat[prefix + key] = value
    return flat


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file's tables, parsed (never executed); AttentionError, one line, when it cannot be read."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise AttentionError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise AttentionError(f"{path} is a directory, not a TOML file") from None
    except OSError as error:
        raise AttentionError(f"{path} cannot be read: {error.strerror or error}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise AttentionError(f"{path} is not valid TOML: {error}") from None


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML config file as an override mapping (never executed, only parsed)."""
    return flatten(read_toml(path))


# Fields that change how a run is evaluated, never its trained weights: left out of the run identity, so
# re-evaluating a run another way (more sampled passes, another batch size) finds the same run.
EVALUATION_ONLY = ("train.eval_batch_size", "eval.", "game.test_games")


def _field_default(spec: dataclasses.Field) -> Any:
    if spec.default is not dataclasses.MISSING:
        return spec.default
    return spec.default_factory()  # type: ignore[misc]


def identity_fields(config: Any, prefix: str = "") -> dict[str, Any]:
    """The dotted fields that make a run what it is: those that differ from their declared defaults, less
    the evaluation-only ones. Defaults are left out so that adding a field (with a default that keeps the
    old behaviour) leaves every existing run's identity unchanged."""
    found: dict[str, Any] = {}
    for spec in dataclasses.fields(config):
        key = prefix + spec.name
        if any(key == name or key.startswith(name) and name.endswith(".") for name in EVALUATION_ONLY):
            continue
        value = getattr(config, spec.name)
        if dataclasses.is_dataclass(value):
            found.update(identity_fields(value, key + "."))
        elif value != _field_default(spec):
            found[key] = list(value) if isinstance(value, tuple) else value
    return found


def config_hash(config: Config, *, ignoring: tuple[str, ...] = ()) -> str:
    """A run's identity: sha256 of :func:`identity_fields` (seed included), with ``train.init_from`` stood
    for by the digest of the weights it names rather than their path, so a stage that starts from the same
    weights is the same run wherever those weights live. ``ignoring`` leaves dotted fields out (to ask
    whether two runs differ only in them; ``train.init_from`` is always kept)."""
    fields = identity_fields(config)
    for key in ignoring:
        fields.pop(key, None)
    if config.train.init_from is not None:
        from attention.runs import weights_digest

        fields["train.init_from"] = "sha256:" + weights_digest(config.train.init_from)
    text = json.dumps(fields, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]
