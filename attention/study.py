"""Study files: one question (a paper's table, a comparison) as data, and the runs it is made of.

A study names a base ``recipe`` (a config TOML under ``studies/recipes/``), a ``budget`` (overrides every row
gets), ``seeds`` and an ``[evaluation]`` protocol, and lists ``[[row]]``s: a ``label``, overrides (``set``),
optional ``[[row.stage]]``s and the paper's number. A row's run for one seed is the base config + recipe +
budget + the row's ``set`` + ``train.seed``. A row with stages is a chain: stage k adds its ``set`` to the
stages before it and starts from stage k-1's weights (``train.init_from``) of the same seed, so a curriculum
or a second learning-rate cycle is declared once and applied to every seed. No run hash is ever written in a
study: runs are found by their identity (:func:`attention.config.config_hash`).

Every key is checked when the file is read (:func:`load_study`), and every stage of every row resolves and
builds, before anything trains: a malformed file is refused in one line naming the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attention import AttentionError
from attention.config import Config, flatten, load_toml, read_toml, with_overrides

STUDY_KEYS = ("title", "source", "recipe", "seeds", "budget", "evaluation", "row", "compare")
ROW_KEYS = ("label", "recipe", "set", "stage", "seeds", "paper", "paper_note", "series", "target")
STAGE_KEYS = ("label", "set")
EVALUATION_KEYS = ("draws", "independent_test_seeds")
COMPARE_KEYS = ("rows", "why")
# What --smoke puts on top of every run: a few steps on a few images, so any study runs end to end in seconds.
SMOKE = {
    "train.epochs": 1,
    "train.batch_size": 16,
    "train.time_budget_s": None,
    "data.train_limit": 32,
    "data.eval_limit": 50,
    "train.compile": False,  # compiling takes longer than a smoke run, and needs a GPU to pay off
}
SMOKE_DRAWS = 2


@dataclass(frozen=True)
class Evaluation:
    """How a study's models are evaluated (see docs/studies.md)."""

    draws: int = 10
    """Evaluation passes, each with its own draw of the random first glimpse (and of anything else the
    model samples); a model's error is the mean over the draws, reported with their spread."""
    independent_test_seeds: tuple[int, ...] = ()
    """Test seeds of further, independent test sets of the same distribution, reported beside the fixed
    one (``data.test_seed``)."""


@dataclass(frozen=True)
class Row:
    label: str
    overrides: dict[str, Any]
    """Recipe + budget + the row's ``set``, flattened: the first stage's config on top of the defaults."""
    stages: tuple[dict[str, Any], ...]
    """Each stage's own overrides (the first is always empty: the row itself)."""
    stage_labels: tuple[str, ...]
    seeds: tuple[int, ...]
    paper: float | None = None
    paper_note: str = ""
    series: str | None = None
    """Rows of one series are drawn as a line against the number of glimpses in the study's figure."""
    target: float | None = None
    """The test error in % the row's seed mean must reach (an issue's target); the report says by how much
    it is met or missed."""


@dataclass(frozen=True)
class Unit:
    """One run of a study: a row's stage for one seed (0-based ``stage``)."""

    row: Row
    seed: int
    stage: int

    @property
    def key(self) -> str:
        return f"{self.row.label} | seed {self.seed} | stage {self.stage + 1} of {len(self.row.stages)}"


@dataclass(frozen=True)
class Selection:
    """The units a command works on: those of rows whose label contains one of ``rows``, for the seeds in
    ``seeds`` (each empty: all), so that a researcher short of compute trains the rows that matter first."""

    rows: tuple[str, ...] = ()
    seeds: tuple[int, ...] = ()

    def picks(self, unit: Unit) -> bool:
        return (not self.rows or any(text in unit.row.label for text in self.rows)) and (
            not self.seeds or unit.seed in self.seeds
        )

    def check(self, studies: list[Study]) -> None:
        """Refuse a row text or a seed that picks nothing in ``studies`` (a typo would train nothing)."""
        labels = [row.label for study in studies for row in study.rows]
        for text in self.rows:
            if not any(text in label for label in labels):
                raise AttentionError(
                    f"--row '{text}' is part of no row's label; the rows are: {'; '.join(labels)}"
                )
        picked = [unit for study in studies for unit in study.units() if self.picks(unit)]
        for seed in self.seeds:
            if not any(unit.seed == seed for unit in picked):
                raise AttentionError(
                    f"--seed {seed} is a seed of none of the rows chosen; see the study files' seeds"
                )


@dataclass(frozen=True)
class Study:
    path: Path
    title: str
    source: str
    rows: tuple[Row, ...]
    evaluation: Evaluation
    compare: tuple[tuple[str, str, str], ...]
    """Pairs of row labels to test against each other, with why."""

    @property
    def name(self) -> str:
        return self.path.stem

    def row(self, label: str) -> Row:
        for row in self.rows:
            if row.label == label:
                return row
        raise AttentionError(f"{self.path}: no row labelled '{label}'")

    def units(self) -> list[Unit]:
        """Every row x seed x stage, in the order they run: a stage after its predecessor, and the first
        seed of every row before the second seed of any: a stopped study already has a whole first table."""
        depth = max(len(row.stages) for row in self.rows)
        most_seeds = max(len(row.seeds) for row in self.rows)
        return [
            Unit(row, row.seeds[index], stage)
            for stage in range(depth)
            for index in range(most_seeds)
            for row in self.rows
            if stage < len(row.stages) and index < len(row.seeds)
        ]


def check_keys(path: Path, where: str, table: Any, known: tuple[str, ...]) -> None:
    if not isinstance(table, dict):
        raise AttentionError(f"{path}: '{where}' must be a table")
    unknown = sorted(set(table) - set(known))
    if unknown:
        key = f"{where}.{unknown[0]}" if where else unknown[0]
        raise AttentionError(f"{path}: unknown key '{key}'; known keys: {', '.join(known)}")


def overrides_table(path: Path, where: str, value: Any) -> dict[str, Any]:
    """A ``set``/``budget`` table as flat overrides; nested tables and dotted keys both work."""
    if not isinstance(value, dict):
        raise AttentionError(f"{path}: '{where}' must be a table, e.g. {{ \"train.epochs\" = 10 }}")
    return flatten(value)


def recipe_overrides(path: Path, recipe: Any, where: str) -> dict[str, Any]:
    """A recipe file (relative to the study file's folder) as overrides."""
    if not isinstance(recipe, str):
        raise AttentionError(f"{path}: '{where}' must name a config file, e.g. \"recipes/ram-mnist.toml\"")
    recipe_path = Path(path).parent / recipe
    if not recipe_path.is_file():
        raise AttentionError(f"{path}: '{where}' names {recipe_path}, which does not exist")
    return load_toml(recipe_path)


def seeds_list(path: Path, where: str, value: Any) -> tuple[int, ...]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)
        or len(set(value)) != len(value)
    ):
        raise AttentionError(f"{path}: '{where}' must be a non-empty list of distinct seeds >= 0")
    return tuple(value)


def stage_config(row: Row, seed: int, stage: int, *, init_from: str | None = None) -> Config:
    """The config of ``row``'s ``stage`` (0-based) for ``seed``; later stages take ``init_from``."""
    overrides = dict(row.overrides)
    for own in row.stages[: stage + 1]:
        overrides.update(own)
    overrides["train.seed"] = seed
    if stage > 0:
        overrides["train.init_from"] = init_from
    return with_overrides(Config(), overrides)


def _check_row(path: Path, row: Row) -> None:
    """Every stage resolves and builds, and no stage changes the shapes of the weights it starts from."""
    from attention.build import make_model, resolve_config

    shapes = None
    for stage in range(len(row.stages)):
        where = f"row '{row.label}'" + (f", stage {stage + 1}" if stage else "")
        try:
            config = resolve_config(stage_config(row, row.seeds[0], stage))
            model = make_model(config, torch_cpu())
        except AttentionError as error:
            raise AttentionError(f"{path}: {where}: {error}") from None
        current = {name: tuple(p.shape) for name, p in model.state_dict().items()}
        if shapes is not None and current != shapes:
            changed = sorted(k for k in set(current) | set(shapes) if current.get(k) != shapes.get(k))
            raise AttentionError(
                f"{path}: {where} changes the model's shapes ({changed[0]}), so it cannot start from the "
                "previous stage's weights; make it a row of its own"
            )
        shapes = current


def torch_cpu():
    import torch

    return torch.device("cpu")


def load_study(path: str | Path, *, smoke: bool = False) -> Study:
    """Read and check a study file (see the module docstring); ``smoke`` shrinks every run (``SMOKE``) and
    keeps one seed per row."""
    path = Path(path)
    raw = read_toml(path)
    check_keys(path, "", raw, STUDY_KEYS)
    if "row" not in raw or not isinstance(raw["row"], list) or not raw["row"]:
        raise AttentionError(f"{path}: a study needs at least one [[row]]")
    base = recipe_overrides(path, raw["recipe"], "recipe") if "recipe" in raw else {}
    budget = overrides_table(path, "budget", raw.get("budget", {}))
    seeds = seeds_list(path, "seeds", raw.get("seeds", [0]))
    evaluation_raw = raw.get("evaluation", {})
    check_keys(path, "evaluation", evaluation_raw, EVALUATION_KEYS)
    draws = evaluation_raw.get("draws", Evaluation.draws)
    if not isinstance(draws, int) or isinstance(draws, bool) or draws < 1:
        raise AttentionError(f"{path}: 'evaluation.draws' must be a whole number >= 1")
    independent = evaluation_raw.get("independent_test_seeds", [])
    if independent:
        independent = seeds_list(path, "evaluation.independent_test_seeds", independent)
    evaluation = Evaluation(SMOKE_DRAWS if smoke else draws, tuple(independent))

    rows: list[Row] = []
    for index, item in enumerate(raw["row"]):
        where = f"row[{index}]"
        check_keys(path, where, item, ROW_KEYS)
        label = item.get("label")
        if not isinstance(label, str) or not label.strip():
            raise AttentionError(f"{path}: {where} needs a label")
        if any(r.label == label for r in rows):
            raise AttentionError(f"{path}: two rows are labelled '{label}'")
        overrides = dict(
            recipe_overrides(path, item["recipe"], f"{where}.recipe") if "recipe" in item else base
        )
        overrides.update(budget)
        overrides.update(overrides_table(path, f"{where}.set", item.get("set", {})))
        stages_raw = item.get("stage", [])
        if not isinstance(stages_raw, list):
            raise AttentionError(f"{path}: '{where}.stage' must be an array of tables ([[row.stage]])")
        stages, stage_labels = [{}], [item.get("label")]
        for number, stage in enumerate(stages_raw, start=2):
            check_keys(path, f"{where}.stage[{number - 2}]", stage, STAGE_KEYS)
            stages.append(overrides_table(path, f"{where}.stage[{number - 2}].set", stage.get("set", {})))
            stage_labels.append(stage.get("label", f"stage {number}"))
        if smoke:
            overrides.update(SMOKE)
            stages = [{k: v for k, v in s.items() if k not in SMOKE} for s in stages]
        row_seeds = seeds_list(path, f"{where}.seeds", item["seeds"]) if "seeds" in item else seeds
        paper, target = item.get("paper"), item.get("target")
        for key, value in (("paper", paper), ("target", target)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
                raise AttentionError(f"{path}: '{where}.{key}' is a test error in %, a number")
        series = item.get("series")
        if series is not None and not isinstance(series, str):
            raise AttentionError(f"{path}: '{where}.series' must be a name")
        row = Row(
            label=label,
            overrides=overrides,
            stages=tuple(stages),
            stage_labels=tuple(stage_labels),
            seeds=row_seeds[:1] if smoke else row_seeds,
            paper=None if paper is None else float(paper),
            paper_note=str(item.get("paper_note", "")),
            series=series,
            target=None if target is None else float(target),
        )
        _check_row(path, row)
        rows.append(row)

    compare = []
    for index, pair in enumerate(raw.get("compare", [])):
        where = f"compare[{index}]"
        check_keys(path, where, pair, COMPARE_KEYS)
        labels = pair.get("rows")
        if not isinstance(labels, list) or len(labels) != 2 or labels[0] == labels[1]:
            raise AttentionError(f"{path}: '{where}.rows' must name two different rows")
        for label in labels:
            if not any(r.label == label for r in rows):
                raise AttentionError(f"{path}: '{where}.rows' names '{label}', which is not a row's label")
        compare.append((labels[0], labels[1], str(pair.get("why", ""))))
    title = raw.get("title", path.stem)
    source = raw.get("source", "")
    if not isinstance(title, str) or not isinstance(source, str):
        raise AttentionError(f"{path}: 'title' and 'source' must be strings")
    return Study(path, title, source, tuple(rows), evaluation, tuple(compare))


def is_search_file(path: Path) -> bool:
    """Whether ``path`` is a search (it has a ``[space]`` table), which has no rows and so no targets: a
    glob like ``studies/*.toml`` takes in the searches that sit beside the studies."""
    try:
        return "space" in read_toml(path)
    except AttentionError:
        return False  # not readable as TOML: load_study says what is wrong with it


def study_files(paths: list[Path]) -> list[Path]:
    """``paths`` less the searches among them (:func:`is_search_file`); refused when nothing else is left."""
    studies = [Path(path) for path in paths if not is_search_file(Path(path))]
    if not studies:
        raise AttentionError("every file given is a search ([space]), not a study: give study files")
    return studies


def unit_config(unit: Unit, runs_dir: Path) -> Config | None:
    """The resolved config of ``unit``: for a later stage, started from the run of the stage before it for
    the same seed; None when that run has not finished yet."""
    from attention.build import resolve_config
    from attention.runs import RESULT, find_run

    init_from = None
    if unit.stage > 0:
        before = unit_config(Unit(unit.row, unit.seed, unit.stage - 1), runs_dir)
        previous = None if before is None else find_run(before, runs_dir, missing_ok=True)
        if previous is None or not (previous / RESULT).is_file():
            return None
        init_from = str(previous)
    return resolve_config(stage_config(unit.row, unit.seed, unit.stage, init_from=init_from))


def unit_run(unit: Unit, runs_dir: Path) -> Path | None:
    """Where ``unit``'s run is or will be: the existing run of its config, else ``runs_dir/<identity>``;
    None while an earlier stage is unfinished."""
    config = unit_config(unit, runs_dir)
    return None if config is None else config_run_dir(config, runs_dir)


def config_run_dir(config: Config, runs_dir: Path) -> Path:
    """Where ``config``'s run is or will be: its existing run (whatever the folder's name), else
    ``runs_dir/<identity>``."""
    from attention.config import config_hash
    from attention.runs import find_run

    return find_run(config, runs_dir, missing_ok=True) or Path(runs_dir) / config_hash(config)


def study_folder(study_path: Path, results_dir: Path = Path("results/studies")) -> Path:
    """Where a study's storage, report and figures live: ``results/studies/<study name>``."""
    return Path(results_dir) / Path(study_path).stem
