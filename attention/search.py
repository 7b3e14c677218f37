"""``attention search``: a random search (Optuna's ``RandomSampler``) over config fields, on the engine.

A search file names a ``recipe``, the overrides every trial gets (``set``: the short budget), the number
of ``trials``, the ``seed`` of the draws, a ``[space]`` (one table per dotted config key: ``low``/``high``
with ``log``, ``int``, or ``choices``) and a ``[pruner]``. The trials are drawn up front from the seed and
enqueued once as fixed trials, so N workers on any machines never run a draw twice, a re-run asks for the
same trials, and the number of trials is a cap across all workers. Each trial trains with ``fit()``,
reports its validation error every epoch (a ``MedianPruner`` may stop it) and records its run directory.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import optuna

from attention import AttentionError
from attention.config import Config, read_toml, with_overrides
from attention.engine import (
    KEY,
    Item,
    Work,
    WorkerSpec,
    check_still_running,
    enqueue,
)
from attention.launch import EngineOptions, launch
from attention.storage import open_study
from attention.study import check_keys, overrides_table, recipe_overrides

if TYPE_CHECKING:
    from attention.train import OnEpoch

log = logging.getLogger(__name__)

SEARCH_KEYS = ("title", "source", "recipe", "set", "trials", "seed", "space", "pruner")
FLOAT_KEYS = ("low", "high", "log", "int")
CHOICE_KEYS = ("choices",)
PRUNER_KEYS = ("name", "startup_trials", "warmup_epochs")
PRUNERS = ("median", "none")
SMOKE = {"train.epochs": 2, "train.batch_size": 16, "data.train_limit": 32, "data.eval_limit": 50}
SMOKE_TRIALS = 3


@dataclass(frozen=True)
class Search:
    path: Path
    title: str
    source: str
    recipe: dict[str, Any]
    """The recipe file's overrides: what the best trial's recipe starts from."""
    budget: dict[str, Any]
    """Overrides every trial gets on top of the recipe (its short budget), not part of the best recipe."""
    trials: int
    seed: int
    space: dict[str, optuna.distributions.BaseDistribution]
    pruner: str
    startup_trials: int
    warmup_epochs: int

    @property
    def name(self) -> str:
        return self.path.stem

    def make_pruner(self) -> optuna.pruners.BasePruner:
        if self.pruner == "median":
            return optuna.pruners.MedianPruner(
                n_startup_trials=self.startup_trials, n_warmup_steps=self.warmup_epochs
            )
        return optuna.pruners.NopPruner()

    def config(self, params: dict[str, Any]) -> Config:
        """A trial's config: recipe + budget + its drawn parameters."""
        return with_overrides(Config(), {**self.recipe, **self.budget, **params})


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _distribution(path: Path, key: str, spec: Any) -> optuna.distributions.BaseDistribution:
    where = f"space.{key}"
    if isinstance(spec, dict) and "choices" in spec:
        check_keys(path, where, spec, CHOICE_KEYS)
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise AttentionError(f"{path}: '{where}.choices' must be a non-empty list")
        return optuna.distributions.CategoricalDistribution(choices)
    check_keys(path, where, spec, FLOAT_KEYS)
    low, high, log_scale, whole = spec.get("low"), spec.get("high"), spec.get("log", False), spec.get("int")
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (low, high)):
        raise AttentionError(f"{path}: '{where}' needs numbers low and high (or choices = [...])")
    if not math.isfinite(low) or not math.isfinite(high) or not low < high:
        raise AttentionError(f"{path}: '{where}' needs low < high, got [{low}, {high}]")
    if not isinstance(log_scale, bool):
        raise AttentionError(f"{path}: '{where}.log' must be true or false")
    if log_scale and low <= 0:
        raise AttentionError(f"{path}: '{where}' is log-uniform, so its range must exclude zero (low > 0)")
    if whole:
        if not (_whole(low) and _whole(high)):
            raise AttentionError(f"{path}: '{where}' is an int range: low and high must be whole numbers")
        return optuna.distributions.IntDistribution(low, high, log=log_scale)
    return optuna.distributions.FloatDistribution(float(low), float(high), log=log_scale)


def load_search(path: str | Path, *, smoke: bool = False) -> Search:
    """Read and check a search file; every key is checked and a drawn config resolves before anything
    trains. ``smoke`` shrinks it to a few tiny trials."""
    path = Path(path)
    raw = read_toml(path)
    check_keys(path, "", raw, SEARCH_KEYS)
    if "recipe" not in raw:
        raise AttentionError(f'{path}: a search needs a recipe = "recipes/....toml"')
    recipe = recipe_overrides(path, raw["recipe"], "recipe")
    budget = overrides_table(path, "set", raw.get("set", {}))
    space_raw = raw.get("space")
    if not isinstance(space_raw, dict) or not space_raw:
        raise AttentionError(f"{path}: 'space' is empty; give at least one [space.\"section.key\"] to search")
    space = {key: _distribution(path, key, spec) for key, spec in _space_items(space_raw)}
    trials, seed = raw.get("trials", 20), raw.get("seed", 0)
    if not _whole(trials) or trials < 1:
        raise AttentionError(f"{path}: 'trials' must be a whole number >= 1")
    if not _whole(seed) or seed < 0:
        raise AttentionError(f"{path}: 'seed' must be a whole number >= 0")
    pruner_raw = raw.get("pruner", {})
    check_keys(path, "pruner", pruner_raw, PRUNER_KEYS)
    pruner = pruner_raw.get("name", "median")
    if pruner not in PRUNERS:
        raise AttentionError(f"{path}: unknown pruner.name '{pruner}'; use one of {', '.join(PRUNERS)}")
    startup, warmup = pruner_raw.get("startup_trials", 5), pruner_raw.get("warmup_epochs", 0)
    if not (_whole(startup) and _whole(warmup) and startup >= 0 and warmup >= 0):
        raise AttentionError(f"{path}: pruner.startup_trials and warmup_epochs must be whole numbers >= 0")
    title, source = raw.get("title", path.stem), raw.get("source", "")
    if smoke:
        budget = {**budget, **SMOKE}
        trials = min(trials, SMOKE_TRIALS)
    search = Search(path, title, source, recipe, budget, trials, seed, space, pruner, startup, warmup)
    _check_space(search)
    return search


def _check_space(search: Search) -> None:
    """Every trial the search will run resolves and builds a model, and so does every value the space
    allows at its edges (each choice, each range's ends), so that a bad value fails the file now, not its
    trials one by one after hours of others."""
    from attention.build import make_model, resolve_config
    from attention.study import torch_cpu

    drawn = draws(search)
    candidates = []  # the edges first: their message names the value at fault
    for key, dist in search.space.items():
        if isinstance(dist, optuna.distributions.CategoricalDistribution):
            edges = list(dist.choices)
        else:
            edges = [dist.low, dist.high]
        candidates += [(f"'{key}' = {value!r}", {**drawn[0], key: value}) for value in edges]
    candidates += [(f"trial {i}'s draw {params}", params) for i, params in enumerate(drawn)]
    checked = set()
    for what, params in candidates:
        try:
            config = resolve_config(search.config(params))
            if config in checked:
                continue
            make_model(config, torch_cpu())
        except AttentionError as error:
            raise AttentionError(f"{search.path}: with {what}: {error}") from None
        checked.add(config)


def _space_items(space: dict[str, Any]) -> list[tuple[str, Any]]:
    """``[space."train.learning_rate"]`` and ``[space.train.learning_rate]`` both name the key."""
    items = []
    for key, value in space.items():
        if isinstance(value, dict) and not (set(value) & {"low", "high", "choices"}):
            items += [(f"{key}.{k}", v) for k, v in _space_items(value)]
        else:
            items.append((key, value))
    return items


def draws(search: Search) -> list[dict[str, Any]]:
    """The search's trials, drawn up front by ``RandomSampler(seed)``: the same list on every machine."""
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a scratch study is not news
    try:
        scratch = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=search.seed))
    finally:
        optuna.logging.set_verbosity(verbosity)
    drawn = []
    for _ in range(search.trials):
        trial = scratch.ask(search.space)
        drawn.append(dict(trial.params))
        scratch.tell(trial, 0.0)
    return drawn


def items(search: Search) -> list[Item]:
    return [Item(f"draw {i}", params=params, attrs={"draw": i}) for i, params in enumerate(draws(search))]


def work(spec: WorkerSpec) -> Work:
    """What a worker runs for a search (see :func:`attention.engine.worker`)."""
    from attention.tasks import TASKS

    search = load_search(spec.file, smoke=spec.smoke)
    if spec.trials is not None:
        search = dataclasses.replace(search, trials=spec.trials)
    runs_dir = Path(spec.runs_dir)
    study, storage = open_study(
        spec.storage,
        search.name + ("-smoke" if spec.smoke else ""),
        sampler_seed=search.seed,
        pruner=search.make_pruner(),
    )
    if "search" not in study.user_attrs:  # for people reading the storage (optuna-dashboard)
        study.set_user_attr(
            "search", {"title": search.title, "source": search.source, "file": str(search.path)}
        )

    drawn = draws(search)
    # a trial's run is busy only when its retry was started while it was wrongly thought stale: its first
    # worker stops after its next epoch (check_still_running), so wait rather than hand it back
    wait_if_busy = True

    def refill() -> None:
        enqueue(study, items(search), errors_since=spec.started)

    def plan(trial: optuna.Trial) -> tuple[Config, Path]:
        return trial_run(search, trial, runs_dir)

    def reporter(trial: optuna.Trial, config: Config) -> OnEpoch:
        task = TASKS.get(config.data.task)  # its own selection number, lower is better

        def report(row: dict[str, Any], final: bool) -> None:
            report_epoch(trial, row, final=final, selection=task.epoch_selection)

        return report

    resolved: dict[int, Config] = {}  # a draw's config, resolved once: a population's claims ask often

    def config_of(trial: optuna.trial.FrozenTrial) -> Config | None:
        from attention.build import resolve_config

        draw = trial.user_attrs.get("draw")
        if not isinstance(draw, int) or not 0 <= draw < len(drawn):
            return None
        if draw not in resolved:
            resolved[draw] = resolve_config(search.config(drawn[draw]))
        return resolved[draw]

    return Work(spec, refill, study, storage, plan, reporter, config_of=config_of, wait_if_busy=wait_if_busy)


def report_epoch(
    trial: optuna.Trial,
    row: dict[str, Any],
    *,
    final: bool,
    selection: Callable[[dict[str, Any]], float] = lambda row: row["val_error_pct"],
) -> None:
    """After each epoch of a trial: stop if it was failed as stale meanwhile, report its validation error
    to the pruner, and raise ``optuna.TrialPruned`` if the pruner stops it. Never at its ``final`` epoch
    (its budget's end, or a stopping rule's): pruning there saves no work and would throw away a finished
    trial's value (a population trains its trials in step, so a median pruner's first decisions can come
    only there)."""
    check_still_running(trial)
    trial.report(selection(row), row["epoch"])
    if not final and trial.should_prune():
        raise optuna.TrialPruned(f"pruned after epoch {row['epoch']}")


def trial_run(search: Search, trial: optuna.Trial, runs_dir: Path) -> tuple[Config, Path]:
    """A claimed trial's config and run directory (recorded on the trial as ``run_dir``)."""
    from attention.build import resolve_config
    from attention.config import config_hash
    from attention.runs import find_run

    params = {key: _suggest(trial, key, dist) for key, dist in search.space.items()}
    config = resolve_config(search.config(params))
    run_dir = find_run(config, runs_dir, missing_ok=True) or runs_dir / config_hash(config)
    trial.set_user_attr("run_dir", str(run_dir))
    log.warning("trial %d (%s): %s -> %s", trial.number, trial.user_attrs.get(KEY), params, run_dir)
    return config, run_dir


def _suggest(trial: optuna.Trial, key: str, distribution: optuna.distributions.BaseDistribution) -> Any:
    """The trial's value of ``key``: the enqueued draw (fixed parameters), as a suggestion of its space."""
    if isinstance(distribution, optuna.distributions.CategoricalDistribution):
        return trial.suggest_categorical(key, distribution.choices)
    if isinstance(distribution, optuna.distributions.IntDistribution):
        return trial.suggest_int(key, distribution.low, distribution.high, log=distribution.log)
    return trial.suggest_float(key, distribution.low, distribution.high, log=distribution.log)


def run_search(path: str | Path, *, trials: int | None = None, **engine: Any) -> dict[str, Any]:
    """Run a search's trials that have not run yet (``trials`` overrides the file's count: the cap).
    ``engine``: the fields of :class:`attention.launch.EngineOptions` (workers, storage, runs_dir, device,
    ...); with ``population`` K > 1 each worker claims up to K waiting trials and trains them as one
    population (the workers are the engine's default or ``workers``, as without populations)."""
    path = Path(path)
    options = EngineOptions(**engine)
    load_search(path, smoke=options.smoke)  # refuses a malformed file before anything runs
    if trials is not None and trials < 1:
        raise AttentionError("--trials must be >= 1")
    [(spec, study)] = launch("search", [path], options, trials=trials)
    states = [t.state.name for t in study.get_trials(deepcopy=False)]
    return {"storage": spec.storage, **{state.lower(): states.count(state) for state in sorted(set(states))}}
