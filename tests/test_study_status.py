"""``attention study status``: each unit's state read from its run directory, and the time still needed."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from attention.config import to_dict
from attention.runs import CHECKPOINT, CONFIG, RESULT, holding_run, write_json, write_metrics
from attention.study import load_study, unit_config, unit_run
from attention.study_status import (
    FINISHED,
    NOT_STARTED,
    STOPPED,
    TRAINING,
    WAITING,
    seconds_left,
    status_lines,
    study_status,
)

STUDY = """
title = "status"
source = "a test"
seeds = [0, 1]
budget = { "train.epochs" = 10 }

[[row]]
label = "one stage"
set = { "model.num_glimpses" = 2 }

[[row]]
label = "two stages"
seeds = [0]
set = { "model.num_glimpses" = 3 }
[[row.stage]]
label = "again"
set = { "train.epochs" = 4 }
"""


@pytest.fixture
def study(tmp_path):
    path = tmp_path / "status.toml"
    path.write_text(STUDY)
    return load_study(path)


def unit(study, label: str, seed: int, stage: int = 0):
    return next(u for u in study.units() if (u.row.label, u.seed, u.stage) == (label, seed, stage))


def started(run: Path, config, epochs: int, seconds_each: float) -> None:
    """A run as the trainer leaves it after ``epochs`` epochs (the files status reads)."""
    run.mkdir(parents=True)
    write_json(run / CONFIG, to_dict(config))
    (run / CHECKPOINT).write_bytes(b"not read by status")
    rows = [
        {"epoch": e, "seconds": seconds_each, "elapsed_seconds": e * seconds_each, "val_error_pct": 50.0 / e}
        for e in range(1, epochs + 1)
    ]
    write_metrics(run, rows)


def test_each_unit_is_finished_training_stopped_not_started_or_waiting(study, tmp_path):
    runs = tmp_path / "runs"
    one_s0, one_s1, two_s0 = (
        unit(study, "one stage", 0),
        unit(study, "one stage", 1),
        unit(study, "two stages", 0),
    )
    # seed 0 of row one: finished; seed 1: stopped after 4 epochs; row two stage 1: trained by a process now
    run = unit_run(one_s0, runs)
    started(run, unit_config(one_s0, runs), 10, 6.0)
    write_json(run / RESULT, {"validation_error_pct": 2.5, "epochs_run": 10, "train_seconds": 60.0})
    started(unit_run(one_s1, runs), unit_config(one_s1, runs), 4, 7.0)
    busy = unit_run(two_s0, runs)
    started(busy, unit_config(two_s0, runs), 3, 20.0)
    with holding_run(busy):
        statuses = study_status(study, runs)
    by_state = {(s.unit.row.label, s.unit.seed, s.unit.stage): s for s in statuses}
    finished = by_state[("one stage", 0, 0)]
    assert finished.state == FINISHED and finished.best_pct == 2.5 and finished.seconds_per_epoch == 6.0
    stopped = by_state[("one stage", 1, 0)]
    assert stopped.state == STOPPED and (stopped.epochs_done, stopped.epochs) == (4, 10)
    assert stopped.best_pct == 12.5 and stopped.seconds == 28.0
    assert by_state[("two stages", 0, 0)].state == TRAINING
    waiting = by_state[("two stages", 0, 1)]  # its config starts from stage 1's unfinished run
    assert waiting.state == WAITING and waiting.epochs is None
    # once nothing holds it, the run stopped
    assert {s.unit.key: s.state for s in study_status(study, runs)}[two_s0.key] == STOPPED
    # time left: seed 1's 6 epochs at its own 7 s, stage 1's 7 at 20 s; stage 2 has no config, no pace
    assert seconds_left(statuses) == (6 * 7.0 + 7 * 20.0, 0, 1)
    text = "\n".join(status_lines(study, statuses))
    assert "1 of 4 units finished; 1 training, 1 stopped, 1 waiting" in text


def test_a_unit_not_started_takes_its_rows_pace_from_another_seed(study, tmp_path):
    runs = tmp_path / "runs"
    one_s0 = unit(study, "one stage", 0)
    started(unit_run(one_s0, runs), unit_config(one_s0, runs), 2, 5.0)
    statuses = study_status(study, runs)
    states = {(s.unit.row.label, s.unit.seed): s.state for s in statuses if s.unit.stage == 0}
    assert states == {
        ("one stage", 0): STOPPED,
        ("one stage", 1): NOT_STARTED,
        ("two stages", 0): NOT_STARTED,
    }
    # seed 0: 8 epochs at 5 s; seed 1: 10 epochs at the row's 5 s; row two: stage 1 has no pace, stage 2 waits
    assert seconds_left(statuses) == (8 * 5.0 + 10 * 5.0, 1, 1)
    text = "\n".join(status_lines(study, statuses))
    assert "(and 1 run with no pace yet, 1 unit waiting for an earlier stage)" in text


def test_a_run_two_rows_share_counts_once_and_a_time_budget_caps_what_is_left(tmp_path):
    path = tmp_path / "shared.toml"
    path.write_text(
        'title = "shared"\nsource = "a test"\nseeds = [0]\n'
        'budget = { "train.epochs" = 10, "train.time_budget_s" = 30.0 }\n'
        '[[row]]\nlabel = "a"\n[[row]]\nlabel = "the same config"\n'
    )
    study, runs = load_study(path), tmp_path / "runs"
    first = unit(study, "a", 0)
    assert unit_run(first, runs) == unit_run(unit(study, "the same config", 0), runs)
    started(unit_run(first, runs), unit_config(first, runs), 2, 5.0)
    # 8 epochs at 5 s would be 40 s, but only 30 - 10 s of its budget are left; once, not twice
    assert seconds_left(study_status(study, runs)) == (20.0, 0, 0)


def test_over_several_studies_a_shared_run_counts_once_and_each_row_keeps_its_own_pace(tmp_path):
    def write(name: str, rows: str):
        path = tmp_path / f"{name}.toml"
        path.write_text(
            f'title = "{name}"\nsource = "a test"\nseeds = [0]\nbudget = {{ "train.epochs" = 10 }}\n{rows}'
        )
        return load_study(path)

    first = write("first", '[[row]]\nlabel = "a"\nset = { "model.num_glimpses" = 2 }\n')
    second = write(  # "a" here is another config; "same" is the first study's run
        "second",
        '[[row]]\nlabel = "a"\nset = { "model.num_glimpses" = 3 }\n'
        '[[row]]\nlabel = "same"\nset = { "model.num_glimpses" = 2 }\n',
    )
    runs = tmp_path / "runs"
    shared = unit(first, "a", 0)
    assert unit_run(shared, runs) == unit_run(unit(second, "same", 0), runs)
    started(unit_run(shared, runs), unit_config(shared, runs), 2, 5.0)
    everything = study_status(first, runs) + study_status(second, runs)
    # 8 epochs at 5 s, once; the second study's row "a" has no pace of its own
    assert seconds_left(everything) == (40.0, 1, 0)


def test_cli_study_status_prints_json_per_study_and_passes_over_searches(study, tmp_path):
    search = tmp_path / "search.toml"  # what a glob like studies/*.toml takes in beside the studies
    search.write_text('title = "s"\ntrials = 2\n[space."train.learning_rate"]\nlow = 1e-4\nhigh = 1e-2\n')
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "attention",
            "study",
            "status",
            str(search),
            str(study.path),
            "--json",
            "--runs-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    [line] = out.splitlines()  # the study's; none for the search
    units = json.loads(line)["units"]
    assert sorted(u["state"] for u in units) == [NOT_STARTED, NOT_STARTED, NOT_STARTED, WAITING]
    assert {(u["row"], u["seed"], u["stage"], u["epochs"]) for u in units if u["state"] == NOT_STARTED} == {
        ("one stage", 0, 1, 10),
        ("one stage", 1, 1, 10),
        ("two stages", 0, 1, 10),
    }
