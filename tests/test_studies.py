"""The committed study and search files: each loads (and its smoke variant), every committed run is a unit of
some study (or a trial of a search), and a malformed study is refused in one line naming the file and key."""

import functools
from pathlib import Path

import pytest

from attention import AttentionError
from attention.build import resolve_config
from attention.config import tomllib
from attention.runs import CONFIG, find_run
from attention.search import SMOKE_TRIALS, draws, load_search
from attention.study import load_study, unit_run

REPO = Path(__file__).resolve().parents[1]
STUDIES = REPO / "studies"
FILES = sorted(STUDIES.glob("*.toml"))
SEARCHES = [path for path in FILES if "space" in tomllib.loads(path.read_text())]
STUDY_FILES = [path for path in FILES if path not in SEARCHES]
# Committed runs: finished ones, and those stopped by hand whose metrics are kept.
RUN_FOLDERS = ("results/runs", "results/unfinished")


def test_studies_holds_study_files_and_recipes():
    assert STUDY_FILES and SEARCHES
    assert (STUDIES / "recipes").is_dir()


@pytest.mark.parametrize("path", STUDY_FILES, ids=lambda p: p.stem)
def test_study_file_loads_and_so_does_its_smoke_variant(path, monkeypatch):
    monkeypatch.chdir(REPO)
    study = load_study(path)
    assert study.units()
    smoke = load_study(path, smoke=True)
    assert [row.label for row in smoke.rows] == [row.label for row in study.rows]
    assert all(len(row.seeds) == 1 for row in smoke.rows)


@pytest.mark.parametrize("path", SEARCHES, ids=lambda p: p.stem)
def test_search_file_loads_and_so_does_its_smoke_variant(path):
    search, smoke = load_search(path), load_search(path, smoke=True)
    assert len(draws(search)) == search.trials >= 1
    assert len(draws(smoke)) == smoke.trials == min(search.trials, SMOKE_TRIALS)
    assert len({tuple(sorted(d.items())) for d in draws(search)}) == search.trials  # no draw twice


@functools.cache
def studies():
    return [load_study(path) for path in STUDY_FILES]


def found_runs(runs_dir: Path) -> set[Path]:
    """The run directories under ``runs_dir`` that some study unit or search trial names."""
    found = set()
    for study in studies():
        for unit in study.units():
            run = unit_run(unit, runs_dir)
            if run is not None and (run / CONFIG).is_file():
                found.add(run.resolve())
    for path in SEARCHES:
        search = load_search(path)
        for params in draws(search):
            run = find_run(resolve_config(search.config(params)), runs_dir, missing_ok=True)
            if run is not None:
                found.add(run.resolve())
    return found


@pytest.mark.parametrize("folder", RUN_FOLDERS)
def test_every_committed_run_is_found_through_a_study(folder, monkeypatch):
    monkeypatch.chdir(REPO)  # init_from paths (a stage's previous run) are relative to the repository
    runs_dir = Path(folder)
    runs = sorted(p.resolve() for p in runs_dir.glob(f"*/{CONFIG}"))
    if not runs:
        pytest.skip(f"no runs under {folder}")
    found = found_runs(runs_dir)
    lost = [str(run.parent.relative_to(REPO)) for run in runs if run.parent not in found]
    assert not lost, f"runs no study file reproduces (add a row or stage that matches each): {lost}"


RECIPE = """
[model]
num_glimpses = 2

[model.core]
hidden_size = 32
"""


def write_study(tmp_path: Path, text: str) -> Path:
    (tmp_path / "recipes").mkdir(exist_ok=True)
    (tmp_path / "recipes" / "tiny.toml").write_text(RECIPE)
    path = tmp_path / "bad.toml"
    path.write_text('recipe = "recipes/tiny.toml"\n' + text)
    return path


@pytest.mark.parametrize(
    ("text", "named"),
    [
        pytest.param('colour = "blue"\n[[row]]\nlabel = "a"\n', "'colour'", id="unknown-top-level-key"),
        pytest.param('[[row]]\nlabel = "a"\nconfig = "x.toml"\n', "'row[0].config'", id="unknown-row-key"),
        pytest.param(
            '[[row]]\nlabel = "a"\n[[row.stage]]\nlabel = "b"\nepochs = 3\n',
            "'row[0].stage[0].epochs'",
            id="unknown-stage-key",
        ),
        pytest.param(
            '[evaluation]\nrepeats = 3\n[[row]]\nlabel = "a"\n',
            "'evaluation.repeats'",
            id="unknown-evaluation-key",
        ),
        pytest.param(
            '[[row]]\nlabel = "a"\nset = { "model.colour" = 1 }\n', "'model.colour'", id="unknown-config-key"
        ),
        pytest.param(
            '[[row]]\nlabel = "a"\n[[row.stage]]\nset = { "model.core.hidden_size" = 64 }\n',
            "row 'a', stage 2 changes the model's shapes",
            id="stage-changes-shapes",
        ),
        pytest.param(
            '[[row]]\nlabel = "a"\nrecipe = "recipes/missing.toml"\n',
            "'row[0].recipe'",
            id="missing-row-recipe",
        ),
        pytest.param(
            '[[row]]\nlabel = "a"\n[[row]]\nlabel = "a"\n', "two rows are labelled 'a'", id="duplicate-labels"
        ),
        pytest.param(
            '[[row]]\nlabel = "a"\n[[compare]]\nrows = ["a", "b"]\n',
            "'compare[0].rows'",
            id="compare-unknown-row",
        ),
    ],
)
def test_malformed_study_is_refused_in_one_line_naming_the_file_and_key(tmp_path, text, named):
    path = write_study(tmp_path, text)
    with pytest.raises(AttentionError) as refused:
        load_study(path)
    message = str(refused.value)
    assert "\n" not in message
    assert str(path) in message
    assert named in message


def test_study_without_its_recipe_is_refused_naming_the_file_and_key(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('recipe = "recipes/missing.toml"\n[[row]]\nlabel = "a"\n')
    with pytest.raises(
        AttentionError, match=r"bad\.toml: 'recipe' names .*missing\.toml, which does not exist"
    ):
        load_study(path)


def test_rows_that_cap_training_in_seconds_are_named_when_workers_share_the_cpu(tmp_path):
    from attention.study import Selection
    from attention.study_run import cap_warning, capped_rows

    path = write_study(
        tmp_path,
        'seeds = [0, 1]\n[[row]]\nlabel = "capped"\nset = { "train.time_budget_s" = 60 }\n'
        '[[row]]\nlabel = "capped later"\n[[row.stage]]\nset = { "train.time_budget_s" = 60 }\n'
        '[[row]]\nlabel = "epochs only"\n',
    )
    study = load_study(path)
    runs = tmp_path / "runs"
    assert capped_rows([study], Selection(), runs) == ["capped", "capped later"]
    assert capped_rows([study], Selection(rows=("epochs",)), runs) == []
    # once every seed of a capped row is finished, nothing of it is left for the cap to cut
    from attention.config import to_dict
    from attention.runs import CONFIG, RESULT, write_json
    from attention.study import unit_config

    for unit in [u for u in study.units() if u.row.label == "capped"]:
        run = unit_run(unit, runs)
        run.mkdir(parents=True)
        write_json(run / CONFIG, to_dict(unit_config(unit, runs)))
        # cut by its cap: one the cap never stopped would also stand for "capped later"'s uncapped first stage
        write_json(run / RESULT, {"epochs_run": 1, "epochs_budget": 5, "stopped_because": "time_budget"})
    assert capped_rows([study], Selection(), runs) == ["capped later"]
    warning = cap_warning(["capped"], 2, ["cpu", "cpu"])
    assert warning is not None and "capped" in warning and "--workers 1" in warning
    # one worker trains at a lone run's speed, and a GPU's workers do not share its cores
    assert cap_warning(["capped"], 1, ["cpu"]) is None
    assert cap_warning(["capped"], 2, ["cuda:0", "cuda:1"]) is None
    assert cap_warning([], 2, ["cpu", "cpu"]) is None
