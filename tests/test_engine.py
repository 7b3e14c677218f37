"""Studies and searches on the engine: worker processes, PostgreSQL, SIGKILL and Ctrl-C, resumption."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from search_files import tiny_search_text

from attention import AttentionError
from attention.engine import HEARTBEAT, KEY
from attention.runs import CHECKPOINT, RESULT, read_metrics
from attention.search import draws, load_search, run_search
from attention.storage import open_storage, storage_lock
from attention.study import Unit, load_study, unit_config, unit_run
from attention.study_run import run_study
from attention.study_status import FAILED, FINISHED, stored_errors, study_status

TINY = '"data.train_limit" = 256, "data.eval_limit" = 100, "train.batch_size" = 64, "model.num_glimpses" = 2'


def write_files(folder: Path, *, epochs: int = 2, pruner: str = "none", trials: int = 4) -> tuple[Path, Path]:
    """A tiny study (two rows, two seeds, a two-stage row) and a tiny search on MNIST."""
    (folder / "recipes").mkdir(parents=True, exist_ok=True)
    (folder / "recipes" / "tiny.toml").write_text('[data]\ntask = "mnist"\n[model]\nnum_glimpses = 2\n')
    study = folder / "tiny-study.toml"
    study.write_text(
        f"""title = "tiny"
recipe = "recipes/tiny.toml"
seeds = [0, 1]
budget = {{ "train.epochs" = {epochs}, {TINY} }}
[evaluation]
draws = 2
[[row]]
label = "one stage"
[[row]]
label = "two stages"
set = {{ "model.where.std" = 0.2 }}
[[row.stage]]
set = {{ "train.learning_rate" = 1e-4 }}
[[compare]]
rows = ["one stage", "two stages"]
"""
    )
    search = folder / "tiny-search.toml"
    search.write_text(tiny_search_text(f'"train.epochs" = {epochs}, {TINY}', trials=trials, pruner=pruner))
    return study, search


def trials_of(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=open_storage(storage)).get_trials()


def cli(*args: str, mnist_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "ATTENTION_DATA": str(mnist_dir)}
    return subprocess.Popen(
        [sys.executable, "-m", "attention.cli", *args, "--no-progress"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # as a command started from a terminal: a suite run as a shell's background job would otherwise
        # pass on its ignored SIGINT, and Ctrl-C would not reach the worker
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def test_a_search_with_two_worker_processes_runs_each_draw_once_and_a_rerun_adds_nothing(mnist_dir, tmp_path):
    _, search_file = write_files(tmp_path, pruner="median")
    storage = f"journal:{tmp_path / 'search.journal'}"
    options = {"storage": storage, "runs_dir": tmp_path / "runs", "data_dir": mnist_dir, "progress": False}
    run_search(search_file, workers=2, **options)
    trials = trials_of(storage, "tiny-search")
    assert len(trials) == 4
    assert {t.state for t in trials} <= {TrialState.COMPLETE, TrialState.PRUNED}
    assert TrialState.COMPLETE in {t.state for t in trials}
    # each trial ran its own up-front draw, recorded its run directory, and reported every epoch
    assert sorted(t.user_attrs[KEY] for t in trials) == [f"draw {i}" for i in range(4)]
    drawn = draws(load_search(search_file))
    for trial in trials:
        assert trial.params == drawn[int(trial.user_attrs[KEY].split()[1])]
        assert Path(trial.user_attrs["run_dir"]).is_dir()
        assert len(trial.intermediate_values) >= 1
    run_search(search_file, workers=2, **options)
    assert len(trials_of(storage, "tiny-search")) == 4  # the cap holds across runs and workers


def test_search_report_writes_the_best_recipe_that_train_accepts(mnist_dir, tmp_path):
    from attention.config import Config, load_toml, with_overrides
    from attention.search_report import write_search_report

    _, search_file = write_files(tmp_path, epochs=1, trials=2)
    with search_file.open("a") as text:  # a choice beside the two ranges
        text.write('[space."model.core.name"]\nchoices = ["rnn", "lstm"]\n')
    storage = f"journal:{tmp_path / 'search.journal'}"
    run_search(search_file, workers=1, storage=storage, runs_dir=tmp_path / "runs", data_dir=mnist_dir)
    written = write_search_report(search_file, storage=storage, out_dir=tmp_path / "report")
    best = min((t for t in trials_of(storage, "tiny-search")), key=lambda t: t.value)
    recipe = load_toml(tmp_path / "report" / "best-recipe.toml")
    config = with_overrides(Config(), recipe)
    assert config.train.learning_rate == best.params["train.learning_rate"]
    assert config.model.where.std == best.params["model.where.std"]
    assert config.model.core.name == best.params["model.core.name"]
    assert (
        f"model.core.name = {best.params['model.core.name']}"
        in (tmp_path / "report" / "report.md").read_text()
    )
    assert config.train.epochs == Config().train.epochs  # the search's short budget is not in the recipe
    assert all(path.stat().st_size > 0 for path in written)


def test_a_study_finishes_every_unit_once_and_its_report_pairs_rows(mnist_dir, tmp_path):
    from attention.report.study_report import write_study_report

    study_file, _ = write_files(tmp_path, epochs=1)
    storage = f"journal:{tmp_path / 'study.journal'}"
    runs = tmp_path / "runs"
    [summary] = run_study(
        study_file, workers=2, storage=storage, runs_dir=runs, data_dir=mnist_dir, progress=False
    )
    assert summary["finished"] == summary["units"] == 6
    study = load_study(study_file)
    stage_one = unit_run(Unit(study.rows[1], 0, 0), runs)
    stage_two = unit_run(Unit(study.rows[1], 0, 1), runs)
    assert json.loads((stage_two / RESULT).read_text())["init_from_sha256"] is not None
    assert stage_one != stage_two
    written = write_study_report(study_file, runs_dir=runs, out_dir=tmp_path / "report", data_dir=mnist_dir)
    text = (tmp_path / "report" / "report.md").read_text()
    assert "| one stage |" in text and "A right more often" in text and "1 + 1" in text
    assert any(p.suffix == ".csv" for p in written) and any(p.suffix == ".png" for p in written)
    # evaluations are cached beside the runs folder, for every study that cites a run, not in the report's
    assert (tmp_path / "evaluations" / f"{stage_two.name}.json").is_file()
    assert not (tmp_path / "report" / "evaluations").exists()
    run_study(study_file, workers=1, storage=storage, runs_dir=runs, data_dir=mnist_dir, progress=False)
    assert len(trials_of(storage, "tiny-study")) == 6  # nothing retrained


def test_a_unit_that_fails_fails_the_command_and_the_next_command_retries_it(mnist_dir, tmp_path):
    study_file = tmp_path / "one.toml"
    study_file.write_text(
        f'title = "one"\nseeds = [0]\nbudget = {{ "train.epochs" = 1, {TINY} }}\n'
        '[evaluation]\ndraws = 1\n[[row]]\nlabel = "only"\nset = { "data.task" = "mnist" }\n'
    )
    storage, runs = f"journal:{tmp_path / 'one.journal'}", tmp_path / "runs"
    empty = tmp_path / "no-data"
    empty.mkdir()
    options = {"workers": 1, "storage": storage, "runs_dir": runs, "progress": False, "device": "cpu"}
    with pytest.raises(AttentionError, match=r"1 trial\(s\) failed: one.toml: only \| seed 0 .*run the same"):
        run_study(study_file, data_dir=empty, **options)
    assert [t.state for t in trials_of(storage, "one")] == [TrialState.FAIL]  # failed once, not looped on
    study = load_study(study_file)
    [status] = study_status(study, runs, stored_errors(study, storage))
    assert status.state == FAILED and str(empty) in status.error  # the error names the folder searched
    [summary] = run_study(study_file, data_dir=mnist_dir, **options)  # the cause fixed: retried
    assert summary["finished"] == 1
    assert [t.state for t in trials_of(storage, "one")] == [TrialState.FAIL, TrialState.COMPLETE]
    [status] = study_status(study, runs, stored_errors(study, storage))
    assert status.state == FINISHED and status.error is None


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def first_epoch_written(runs: Path) -> Path | None:
    """The run directory whose first epoch's checkpoint is written (metrics.jsonl comes just before)."""
    for checkpoint in runs.glob(f"*/{CHECKPOINT}"):
        return checkpoint.parent
    return None


def test_a_sigkilled_worker_costs_only_time_its_trial_is_retried_from_its_checkpoint(mnist_dir, tmp_path):
    _, search_file = write_files(tmp_path, epochs=4, trials=2)
    storage = f"journal:{tmp_path / 'search.journal'}"
    runs = tmp_path / "runs"
    common = ["search", str(search_file), "--storage", storage, "--runs-dir", str(runs), "--workers", "1"]
    timing = ["--heartbeat-s", "0.5", "--stale-after-s", "3"]
    doomed = cli(*common, *timing, mnist_dir=mnist_dir)
    wait_for(lambda: first_epoch_written(runs) is not None, 120, "the first epoch")
    os.kill(doomed.pid, signal.SIGKILL)
    doomed.wait()
    killed_run = first_epoch_written(runs)
    epoch_one = read_metrics(killed_run)[0]
    assert not (killed_run / RESULT).exists()

    survivor = cli(*common, *timing, mnist_dir=mnist_dir)
    output, _ = survivor.communicate(timeout=300)
    assert survivor.returncode == 0, output
    trials = trials_of(storage, "tiny-search")
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    stale = [t for t in trials if t.state == TrialState.FAIL]
    assert sorted(t.user_attrs[KEY] for t in complete) == ["draw 0", "draw 1"]  # the trial count is reached
    assert len(stale) == 1 and stale[0].user_attrs["ended_because"] == "stale"
    retry = next(t for t in complete if t.user_attrs[KEY] == stale[0].user_attrs[KEY])
    assert retry.params == stale[0].params and retry.user_attrs["run_dir"] == str(killed_run)
    # resumed, not restarted: the killed worker's first epoch (with its wall time) is still the record
    assert read_metrics(killed_run)[0] == epoch_one
    assert len(read_metrics(killed_run)) == 4


def test_ctrl_c_stops_a_worker_cleanly_and_the_study_resumes_where_it_was(mnist_dir, tmp_path):
    study_file, _ = write_files(tmp_path, epochs=4)
    storage = f"journal:{tmp_path / 'study.journal'}"
    runs = tmp_path / "runs"
    args = ["study", "run", str(study_file), "--storage", storage, "--runs-dir", str(runs), "--workers", "1"]
    worker = cli(*args, mnist_dir=mnist_dir)
    wait_for(lambda: first_epoch_written(runs) is not None, 120, "the first epoch")
    worker.send_signal(signal.SIGINT)
    output, _ = worker.communicate(timeout=60)
    assert worker.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output
    interrupted = [t for t in trials_of(storage, "tiny-study") if t.state == TrialState.FAIL]
    assert [t.user_attrs["ended_because"] for t in interrupted] == ["interrupted"]
    stopped_run = Path(interrupted[0].user_attrs["run_dir"])
    epoch_one = read_metrics(stopped_run)[0]

    [summary] = run_study(
        study_file, workers=1, storage=storage, runs_dir=runs, data_dir=mnist_dir, progress=False
    )
    assert summary["finished"] == summary["units"] == 6
    assert read_metrics(stopped_run)[0] == epoch_one  # continued from its checkpoint


def find_postgres_binaries() -> Path | None:
    for candidate in [shutil.which("pg_ctl"), *sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))]:
        if candidate and Path(candidate).with_name("initdb").exists():
            return Path(candidate).parent
    return None


@pytest.fixture
def postgres_url():
    """A PostgreSQL server of our own, on a Unix socket in a temporary folder, stopped afterwards."""
    binaries = find_postgres_binaries()
    if binaries is None:
        pytest.skip("PostgreSQL's initdb and pg_ctl are not installed")
    pytest.importorskip("psycopg2", reason="the 'postgres' extra (psycopg2) is not installed")
    # not under pytest's own temporary folder: that one is private to this user, and the server runs as
    # the postgres user
    folder = Path(tempfile.mkdtemp(prefix="attention-postgres-"))
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # PostgreSQL refuses to run as root
        shutil.chown(folder, "postgres")
        as_postgres = ["runuser", "-u", "postgres", "--"]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    data = folder / "data"
    subprocess.run(
        [*as_postgres, str(binaries / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"],
        check=True,
        capture_output=True,
    )
    options = f"-k {folder} -p {port} -c listen_addresses=''"
    start = [*as_postgres, str(binaries / "pg_ctl"), "-D", str(data), "-o", options, "-w", "-l"]
    subprocess.run([*start, str(folder / "log"), "start"], check=True, capture_output=True)
    try:
        yield f"postgresql+psycopg2://postgres@/postgres?host={folder}&port={port}"
    finally:
        subprocess.run(
            [*as_postgres, str(binaries / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            capture_output=True,
        )


def test_two_workers_share_one_study_through_postgresql(mnist_dir, tmp_path, postgres_url):
    study_file, _ = write_files(tmp_path, epochs=1)
    runs = tmp_path / "runs"
    args = [
        "study",
        "run",
        str(study_file),
        "--storage",
        postgres_url,
        "--runs-dir",
        str(runs),
        "--workers",
        "1",
    ]
    machines = [cli(*args, mnist_dir=mnist_dir) for _ in range(2)]  # as two machines would start them
    for machine in machines:
        output, _ = machine.communicate(timeout=300)
        assert machine.returncode == 0, output
    trials = trials_of(postgres_url, "tiny-study")
    keys = [t.user_attrs[KEY] for t in trials if t.state == TrialState.COMPLETE]
    assert len(keys) == len(set(keys)) == 6  # every unit once, none twice
    study = load_study(study_file)
    assert all((unit_run(unit, runs) / RESULT).is_file() for unit in study.units())


@pytest.mark.parametrize(
    "change,message",
    [
        ("trials = 4\nbogus = 1", "unknown key 'bogus'"),
        ('[space."train.learning_rate"]\nlow = 0.0\nhigh = 1e-2\nlog = true', "must exclude zero"),
        ('[space."train.no_such_field"]\nlow = 1.0\nhigh = 2.0', "unknown config key 'train.no_such_field'"),
        ('[space."train.learning_rate"]\nlow = 1e-2\nhigh = 1e-4', "low < high"),
        # values that only building the model refuses: in the fixed settings, a choice, a range's end
        ('set = { "model.reader.name" = "nope" }', "unknown reader 'nope'"),
        ('[space."model.core.name"]\nchoices = ["lstm", "gru"]', "unknown core 'gru'"),
        ('[space."model.where.std"]\nlow = -0.1\nhigh = 0.3', r"'model.where.std' = -0.1: .*must be > 0"),
    ],
)
def test_a_malformed_search_is_refused_in_one_line_naming_file_and_key(tmp_path, change, message):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "tiny.toml").write_text('[data]\ntask = "mnist"\n')
    path = tmp_path / "bad.toml"
    path.write_text(f'recipe = "recipes/tiny.toml"\n{change}\n')
    if "space" not in change:
        path.write_text(path.read_text() + '[space."model.where.std"]\nlow = 0.03\nhigh = 0.3\n')
    with pytest.raises(AttentionError, match=message) as error:
        load_search(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)


def test_a_search_without_a_space_is_refused(tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "tiny.toml").write_text("")
    path = tmp_path / "empty.toml"
    path.write_text('recipe = "recipes/tiny.toml"\n[space]\n')
    with pytest.raises(AttentionError, match="'space' is empty"):
        load_search(path)


def test_sqlite_storage_is_refused_with_what_to_use_instead():
    with pytest.raises(AttentionError, match="journal file"):
        open_storage("sqlite:///x.db")


def test_the_pruner_stops_a_trial_before_its_last_epoch_but_never_at_it():
    from attention.search import report_epoch

    # a median pruner with no start-up trials prunes the worse of two trials at any step they share
    study = optuna.create_study(pruner=optuna.pruners.MedianPruner(n_startup_trials=0, n_warmup_steps=0))
    good = study.ask()
    for epoch in (1, 2, 3):
        good.report(1.0, epoch)
    study.tell(good, 1.0)

    early = study.ask()
    with pytest.raises(optuna.TrialPruned, match="after epoch 2"):
        report_epoch(early, {"epoch": 2, "val_error_pct": 50.0}, final=False)
    study.tell(early, state=TrialState.PRUNED)

    late = study.ask()  # as worse at its last epoch (its budget's, or a stopping rule's): its value is kept
    report_epoch(late, {"epoch": 3, "val_error_pct": 50.0}, final=True)
    assert late.should_prune()  # the pruner would have stopped it
    study.tell(late, 50.0)
    assert study.trials[-1].state == TrialState.COMPLETE


def study_work(study_file: Path, storage: str, runs: Path, mnist_dir: Path):
    from attention.engine import WorkerSpec
    from attention.study_run import work

    spec = WorkerSpec(
        kind="study", file=str(study_file), storage=storage, runs_dir=str(runs), data_dir=str(mnist_dir),
        device="cpu", threads=1, poll_s=0.05,
    )  # fmt: skip
    found = work(spec)
    with storage_lock(storage, found.storage):
        found.refill()
    return found


def test_a_worker_does_not_claim_a_unit_whose_run_another_process_trains(mnist_dir, tmp_path):
    from attention.engine import claim
    from attention.runs import holding_run

    study_file, _ = write_files(tmp_path)
    runs = tmp_path / "runs"
    work = study_work(study_file, f"journal:{tmp_path / 'study.journal'}", runs, mnist_dir)
    busy_unit = Unit(load_study(study_file).rows[0], 0, 0)
    busy = unit_run(busy_unit, runs)
    busy.mkdir(parents=True)
    with holding_run(busy):  # another study sharing this run trains it now
        claimed = [claim(work.study, work.storage, work.accept) for _ in range(4)]
        keys = [t.user_attrs[KEY] for t in claimed if t is not None]
        assert len(keys) == 3 and busy_unit.key not in keys  # the three others (second stages must wait)
        assert claimed[-1] is None
    freed = claim(work.study, work.storage, work.accept)
    assert freed is not None and freed.user_attrs[KEY] == busy_unit.key


def test_a_row_whose_recipe_changes_is_trained_again_and_the_others_are_not(mnist_dir, tmp_path):
    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "tiny.toml").write_text('[data]\ntask = "mnist"\n')
    study_file = tmp_path / "change.toml"
    text = (
        f'recipe = "recipes/tiny.toml"\nseeds = [0]\nbudget = {{ "train.epochs" = 1, {TINY} }}\n'
        '[[row]]\nlabel = "kept"\n[[row]]\nlabel = "changed"\nset = { "model.where.std" = 0.2 }\n'
    )
    study_file.write_text(text)
    storage = f"journal:{tmp_path / 'study.journal'}"
    runs = tmp_path / "runs"
    run = dict(workers=1, storage=storage, runs_dir=runs, data_dir=mnist_dir, progress=False)
    run_study(study_file, **run)
    study_file.write_text(text.replace('"model.where.std" = 0.2', '"model.where.std" = 0.3'))
    [summary] = run_study(study_file, **run)
    assert summary["finished"] == summary["units"] == 2
    trained = [t.user_attrs[KEY] for t in trials_of(storage, "change") if t.state == TrialState.COMPLETE]
    assert sorted(trained) == ["changed | seed 0 | stage 1 of 1"] * 2 + ["kept | seed 0 | stage 1 of 1"]
    assert len(list(runs.glob("*/result.json"))) == 3


def test_a_unit_that_fails_after_an_earlier_trial_of_it_completed_is_reported_as_failed(tmp_path):
    from attention.engine import ERROR, failed_items

    study = optuna.create_study(study_name="order", storage=open_storage(f"journal:{tmp_path / 'j.journal'}"))
    for key, outcome in [
        ("retrained", "complete"),
        ("retrained", "error"),
        ("fixed", "error"),
        ("fixed", "complete"),
    ]:
        trial = study.ask()
        trial.set_user_attr(KEY, key)
        if outcome == "error":
            trial.set_user_attr(ERROR, "loss is nan")
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, 1.0)
    assert failed_items(study) == {"retrained": "loss is nan"}


def test_a_worker_skips_a_waiting_trial_that_another_worker_claimed_and_ended_since_it_looked(tmp_path):
    from attention.engine import claim

    url = f"journal:{tmp_path / 'study.journal'}"
    storage = open_storage(url)
    study = optuna.create_study(study_name="race", storage=storage)
    for key in ("first", "second"):
        study.enqueue_trial({}, user_attrs={KEY: key})
    seen = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))  # what this worker read
    other = optuna.load_study(study_name="race", storage=open_storage(url))
    taken = claim(other, other._storage)  # another worker takes "first" and hands it back at once
    assert taken is not None and taken.user_attrs[KEY] == "first"
    other._storage.set_trial_state_values(taken._trial_id, TrialState.FAIL)

    study.get_trials = lambda deepcopy=False, states=None: seen  # the list read before that happened
    mine = claim(study, storage)
    assert mine is not None and mine.user_attrs[KEY] == "second"
    assert claim(study, storage) is None


def test_a_worker_goes_on_to_the_next_file_while_the_first_ones_last_unit_trains_elsewhere(
    mnist_dir, tmp_path
):
    from attention.engine import claim, next_trial

    first_file, _ = write_files(tmp_path / "a")
    second_file, _ = write_files(tmp_path / "b")
    second_file = second_file.rename(second_file.with_name("other-study.toml"))
    runs = tmp_path / "runs"
    storage = f"journal:{tmp_path / 'studies.journal'}"  # one journal holds both studies, by name
    first = study_work(first_file, storage, runs, mnist_dir)
    second = study_work(second_file, storage, runs, mnist_dir)
    elsewhere = [claim(first.study, first.storage) for _ in range(4)]  # every ready unit of A is running
    assert all(t is not None for t in elsewhere)
    work, trial = next_trial([first, second])
    assert work is second and trial.study.study_name == "other-study"
    # one of A's workers dies (its heartbeat stops): the next claim reaps it and retries it, A first
    dead = elsewhere[0]
    first.storage.set_trial_user_attr(dead._trial_id, HEARTBEAT, time.time() - 3600)
    work, trial = next_trial([first, second])
    assert work is first and trial.user_attrs[KEY] == dead.user_attrs[KEY]


def test_two_study_files_in_one_command_each_finish_every_unit(mnist_dir, tmp_path):
    first_file, _ = write_files(tmp_path / "a", epochs=1)
    second_file, _ = write_files(tmp_path / "b", epochs=1)
    second_file = second_file.rename(second_file.with_name("other-study.toml"))
    runs = tmp_path / "runs"
    storage = f"journal:{tmp_path / 'studies.journal'}"
    summaries = run_study(
        [first_file, second_file],
        workers=2,
        storage=storage,
        runs_dir=runs,
        data_dir=mnist_dir,
        progress=False,
    )
    assert [(s["finished"], s["units"]) for s in summaries] == [(6, 6), (6, 6)]
    assert len(list(runs.iterdir())) == 6  # the same recipes and seeds: both files' units are these runs
    assert len(trials_of(storage, "tiny-study")) == 6


@pytest.mark.parametrize(
    "names, message",
    [
        (["tiny-study.toml", "tiny-study.toml"], "named twice"),
        (["tiny-study.toml", "b/tiny-study.toml"], "same name"),
    ],
)
def test_study_files_that_would_share_a_storage_are_refused(tmp_path, names, message):
    write_files(tmp_path)
    write_files(tmp_path / "b")
    with pytest.raises(AttentionError, match=message):
        run_study([tmp_path / n for n in names], workers=1, runs_dir=tmp_path / "runs", progress=False)


def test_a_worker_waits_while_a_later_file_still_trains_and_stops_when_every_file_is_idle(
    mnist_dir, tmp_path
):
    import threading

    from attention.engine import claim, next_trial

    first_file, _ = write_files(tmp_path / "a")
    second_file, _ = write_files(tmp_path / "b")
    second_file = second_file.rename(second_file.with_name("other-study.toml"))
    runs, storage = tmp_path / "runs", f"journal:{tmp_path / 'studies.journal'}"
    first = study_work(first_file, storage, runs, mnist_dir)
    second = study_work(second_file, storage, runs, mnist_dir)
    while (done := claim(first.study, first.storage)) is not None:  # A: its ready units ended,
        first.study.tell(done, 1.0)
    mark_finished(load_study(first_file).units(), runs)  # and every run of A (so B's too: the same runs)
    while (running := claim(second.study, second.storage)) is not None:  # B: its units run elsewhere
        second.storage.set_trial_user_attr(running._trial_id, HEARTBEAT, time.time() + 3600)
    found: list = []
    waiting = threading.Thread(target=lambda: found.append(next_trial([first, second])), daemon=True)
    waiting.start()
    waiting.join(timeout=1.0)
    assert waiting.is_alive()  # A is idle but B's units still run: their worker may die and need a retry
    for running in second.study.get_trials(states=(TrialState.RUNNING,)):
        second.study.tell(running.number, 1.0)
    waiting.join(timeout=30)
    assert not waiting.is_alive() and found == [None]


def test_a_unit_taken_by_another_process_as_it_got_ready_is_handed_back_and_claimed_once_free(
    mnist_dir, tmp_path
):
    from attention.engine import ENDED, claim, run_trial
    from attention.runs import holding_run

    study_file, _ = write_files(tmp_path)
    runs = tmp_path / "runs"
    work = study_work(study_file, f"journal:{tmp_path / 'study.journal'}", runs, mnist_dir)
    trial = claim(work.study, work.storage, work.accept)
    run = unit_run(unit_of(study_file, trial.user_attrs[KEY]), runs)
    run.mkdir(parents=True)
    with holding_run(run):  # another process took the run after this worker claimed its unit
        run_trial(work.study, work.storage, trial, work.execute, heartbeat_s=30)
    ended = work.storage.get_trial(trial._trial_id)
    assert ended.state == TrialState.FAIL and ended.user_attrs[ENDED] == "handed back"
    assert not (run / RESULT).exists() and not (run / CHECKPOINT).exists()
    with storage_lock(work.spec.storage, work.storage):
        work.refill()  # queued again
    again = [claim(work.study, work.storage, work.accept) for _ in range(4)]
    assert trial.user_attrs[KEY] in [t.user_attrs[KEY] for t in again if t is not None]


def unit_of(study_file: Path, key: str) -> Unit:
    return next(u for u in load_study(study_file).units() if u.key == key)


def test_a_study_continues_its_stopped_runs_before_it_starts_new_ones(mnist_dir, tmp_path):
    from attention.engine import claim

    study_file, _ = write_files(tmp_path)
    runs = tmp_path / "runs"
    work = study_work(study_file, f"journal:{tmp_path / 'study.journal'}", runs, mnist_dir)
    queued = waiting_keys(work)
    stopped = unit_run(unit_of(study_file, queued[-1]), runs)  # last in the queue, stopped part way
    stopped.mkdir(parents=True)
    (stopped / CHECKPOINT).write_bytes(b"")
    order = [claim(work.study, work.storage, work.accept, work.first).user_attrs[KEY] for _ in queued]
    assert order == [queued[-1], *queued[:-1]]


def test_a_worker_resolves_each_ready_units_run_once_and_a_later_stage_once_its_first_has_finished(
    mnist_dir, tmp_path, monkeypatch
):
    import collections

    import attention.study_run as study_run
    from attention.engine import claim

    calls: collections.Counter = collections.Counter()

    def counted(unit, runs_dir):
        calls[unit.key] += 1
        return unit_config(unit, runs_dir)

    monkeypatch.setattr(study_run, "unit_config", counted)
    study_file, _ = write_files(tmp_path)
    runs = tmp_path / "runs"
    work = study_work(study_file, f"journal:{tmp_path / 'study.journal'}", runs, mnist_dir)
    ready = [u for u in load_study(study_file).units() if u.stage == 0]
    first_stage = next(u for u in ready if u.row.label == "two stages" and u.seed == 0)
    while (trial := claim(work.study, work.storage, work.accept, work.first)) is not None:
        if trial.user_attrs[KEY] != first_stage.key:  # every claim asks for the unit's run (accept, first)
            mark_finished([unit_of(study_file, trial.user_attrs[KEY])], runs)
            work.study.tell(trial, 1.0)
    with storage_lock(work.spec.storage, work.storage):
        work.refill()
    assert all(calls[u.key] == 1 for u in ready)  # not once per claim and per refill
    later = Unit(first_stage.row, 0, 1)
    assert waiting_keys(work) == [Unit(first_stage.row, 1, 1).key]  # seed 0's first stage still trains

    mark_finished([first_stage], runs)
    work.study.tell(next(t.number for t in work.study.get_trials(states=(TrialState.RUNNING,))), 1.0)
    with storage_lock(work.spec.storage, work.storage):
        work.refill()
    assert sorted(waiting_keys(work)) == sorted([Unit(first_stage.row, 1, 1).key, later.key])
    resolved = calls[later.key]
    with storage_lock(work.spec.storage, work.storage):
        work.refill()
    assert calls[later.key] == resolved  # once known, it is not asked again


def mark_finished(units, runs: Path) -> None:
    """Stand-ins for the files a finished run leaves, for each unit (earlier stages first)."""
    for unit in sorted(units, key=lambda u: u.stage):
        run = unit_run(unit, runs)
        run.mkdir(parents=True, exist_ok=True)
        for name in ("config.json", RESULT, "model.pt"):
            (run / name).write_text("{}")


def waiting_keys(work) -> list[str]:
    return [t.user_attrs[KEY] for t in work.study.get_trials(states=(TrialState.WAITING,))]


def test_the_workers_honour_the_device_asked_for_and_a_missing_one_is_refused(monkeypatch, tmp_path):
    import torch

    from attention.launch import default_workers

    cores = len(os.sched_getaffinity(0))
    assert default_workers("cpu") == (cores, ["cpu"] * cores, 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert default_workers("auto") == (cores, ["cpu"] * cores, 1)
    with pytest.raises(AttentionError, match="CUDA is not available; use --device cpu"):
        default_workers("cuda:1")
    study_file, _ = write_files(tmp_path)
    storage = f"journal:{tmp_path / 'study.journal'}"
    with pytest.raises(AttentionError, match="CUDA is not available"):
        run_study(study_file, storage=storage, runs_dir=tmp_path / "runs", device="cuda", progress=False)
    assert not (tmp_path / "study.journal").exists() and not (tmp_path / "runs").exists()  # nothing queued
    # on a machine with two GPUs: one worker each, or one worker on the GPU named
    import attention.build

    asked: list[bool] = []  # choosing a GPU asks for its deterministic kernels (not here: process-wide)
    monkeypatch.setattr(attention.build, "use_deterministic_cuda", lambda: asked.append(True))
    default_workers("cpu")
    assert not asked
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert default_workers("cuda") == (2, ["cuda:0", "cuda:1"], 1)
    assert default_workers("auto") == (2, ["cuda:0", "cuda:1"], 1)
    assert default_workers("cuda:1") == (1, ["cuda:1"], 1)
    assert asked
    with pytest.raises(AttentionError, match=r"has 2 CUDA device\(s\): use cuda:0 to cuda:1"):
        default_workers("cuda:2")
    for typo in ("gpu", "cuda0", "mps"):  # a typo, or a device this framework does not run on
        with pytest.raises(AttentionError, match=f"device '{typo}'.*use cpu, cuda, cuda:N or auto"):
            default_workers(typo)


def test_a_gpu_run_asks_for_deterministic_kernels(monkeypatch):
    """Same seed and machine, same result: cuDNN must not pick algorithms by timing, and the products must
    add in a fixed order. The settings are process-wide, so they are put back afterwards."""
    import torch
    import torch.utils.deterministic

    from attention.build import CUBLAS_WORKSPACE, use_deterministic_cuda

    before = (
        torch.backends.cudnn.benchmark,
        torch.backends.cudnn.deterministic,
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.utils.deterministic.fill_uninitialized_memory,
    )
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", "")  # recorded first, so teardown restores the original
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG")
    torch.backends.cudnn.benchmark = True
    try:
        use_deterministic_cuda()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_WORKSPACE
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.is_deterministic_algorithms_warn_only_enabled()  # a missing kernel warns, not fails
        assert not torch.utils.deterministic.fill_uninitialized_memory
        monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # the user's own choice is kept
        use_deterministic_cuda()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"
    finally:
        benchmark, deterministic, enabled, warn_only, fill = before
        torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic = benchmark, deterministic
        torch.use_deterministic_algorithms(enabled, warn_only=warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = fill


def test_a_smoke_run_told_only_its_storage_keeps_its_runs_out_of_the_committed_runs_folder(
    mnist_dir, tmp_path, monkeypatch
):
    study_file, _ = write_files(tmp_path)
    monkeypatch.chdir(tmp_path)  # where results/runs would be
    storage = f"journal:{tmp_path / 'smoke.journal'}"
    [summary] = run_study(study_file, smoke=True, storage=storage, data_dir=mnist_dir, progress=False)
    assert summary["finished"] == summary["units"] > 0
    assert summary["storage"] == storage
    assert Path(summary["runs_dir"]).parent.name.startswith("attention-smoke-")  # its scratch folder
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize(
    "args",
    [
        ["data", "show", "--task", "mnist", "--count", "0"],
        ["data", "show", "--task", "mnist", "--count", "-3"],
        ["report", "glimpses", "run", "--out", "x.png", "--count", "0"],
        ["study", "run", "x.toml", "--heartbeat-s", "0"],
        ["study", "run", "x.toml", "--seed", "-1"],
        ["study", "run", "x.toml", "--population", "0"],
        ["search", "x.toml", "--stale-after-s", "nan"],
    ],
)
def test_the_cli_refuses_counts_and_intervals_that_are_not_positive(args, capsys):
    from attention.cli import build_parser

    with pytest.raises(SystemExit) as exit:
        build_parser().parse_args(args)
    assert exit.value.code == 2 and "must be" in capsys.readouterr().err


def test_the_fault_timings_default_to_the_engines_and_a_flag_overrides_one(tmp_path):
    from attention.cli import build_parser
    from attention.commands.studies import engine_options
    from attention.engine import HEARTBEAT_S, STALE_AFTER_S, WorkerSpec
    from attention.launch import EngineOptions

    plain = EngineOptions(**engine_options(build_parser().parse_args(["study", "run", "x.toml"])))
    assert (plain.heartbeat_s, plain.stale_after_s) == (HEARTBEAT_S, STALE_AFTER_S)
    assert (WorkerSpec.heartbeat_s, WorkerSpec.stale_after_s) == (HEARTBEAT_S, STALE_AFTER_S)
    told = EngineOptions(
        **engine_options(build_parser().parse_args(["search", "x.toml", "--stale-after-s", "900"]))
    )
    assert (told.heartbeat_s, told.stale_after_s) == (HEARTBEAT_S, 900.0)


def test_a_stale_limit_within_two_heartbeats_is_refused_before_anything_is_queued(tmp_path):
    study_file, _ = write_files(tmp_path)
    storage = f"journal:{tmp_path / 'study.journal'}"
    with pytest.raises(AttentionError, match="more than twice --heartbeat-s"):
        run_study(study_file, storage=storage, runs_dir=tmp_path / "runs", heartbeat_s=30, stale_after_s=60)
    assert not (tmp_path / "study.journal").exists()


@pytest.mark.parametrize("document", [None, "# results\n\nno markers here\n"])
def test_a_report_into_a_document_it_cannot_update_is_refused_before_anything_is_written(tmp_path, document):
    from attention.report.study_report import write_study_report

    study_file, _ = write_files(tmp_path)
    into = tmp_path / "results.md"
    if document is not None:
        into.write_text(document)
    with pytest.raises(AttentionError, match="does not exist|needs the lines"):
        write_study_report(study_file, runs_dir=tmp_path / "runs", out_dir=tmp_path / "report", into=into)
    assert not (tmp_path / "report").exists()
    assert into.read_text() == document if document is not None else not into.exists()


def test_a_study_run_limited_to_some_rows_and_seeds_trains_those_and_leaves_the_rest_waiting(
    mnist_dir, tmp_path
):
    import threading

    from attention.engine import WorkerSpec
    from attention.study import Selection
    from attention.study_run import is_finished, work

    study_file, _ = write_files(tmp_path, epochs=1)
    storage, runs = f"journal:{tmp_path / 'study.journal'}", tmp_path / "runs"
    # an earlier command of the whole study left its first units waiting in the storage
    spec = WorkerSpec("study", str(study_file), storage, str(runs), str(mnist_dir), "cpu", 1)
    everything = work(spec)
    with storage_lock(storage, everything.storage):
        everything.refill()
    assert len(trials_of(storage, "tiny-study")) == 4  # both rows' first stages, both seeds
    options = {"workers": 1, "storage": storage, "runs_dir": runs, "data_dir": mnist_dir, "progress": False}
    summaries = []
    command = threading.Thread(
        target=lambda: summaries.extend(
            run_study(study_file, selection=Selection(rows=("two",), seeds=(1,)), **options)
        ),
        daemon=True,
    )
    command.start()
    command.join(timeout=300)
    assert not command.is_alive(), "a limited run waited for units it was not asked to train"
    [summary] = summaries
    assert summary["finished"] == summary["units"] == 2  # the two stages of seed 1 of "two stages"
    study = load_study(study_file)
    finished = {unit.key for unit in study.units() if is_finished(unit_run(unit, runs))}
    assert finished == {"two stages | seed 1 | stage 1 of 2", "two stages | seed 1 | stage 2 of 2"}
    states = [t.state for t in trials_of(storage, "tiny-study")]
    assert states.count(TrialState.WAITING) == 3 and states.count(TrialState.COMPLETE) == 2
    from attention.report.study_report import write_study_report

    out = tmp_path / "report"
    write_study_report(study_file, runs_dir=runs, out_dir=out, data_dir=mnist_dir)
    report = (out / "report.md").read_text()
    assert "| not finished (seeds 0, 1) |" in report  # the row none of whose seeds ran
    assert "(s1); not finished: 0 |" in report  # the row of which seed 1 ran
    assert f"`attention study status {study_file}`" in report
    [summary] = run_study(study_file, **options)  # the whole study: the rest, once each
    assert summary["finished"] == summary["units"] == 6
    assert len(trials_of(storage, "tiny-study")) == 6


@pytest.mark.parametrize(
    "selection, message",
    [
        (
            {"rows": ("three stages",)},
            "--row 'three stages' is part of no row's label; the rows are: one stage",
        ),
        ({"seeds": (7,)}, "--seed 7 is a seed of none of the rows chosen"),
        ({"rows": ("one",), "seeds": (2,)}, "--seed 2"),
    ],
)
def test_a_selection_that_picks_nothing_is_refused_before_anything_is_queued(tmp_path, selection, message):
    from attention.study import Selection

    study_file, _ = write_files(tmp_path)
    storage = f"journal:{tmp_path / 'study.journal'}"
    with pytest.raises(AttentionError, match=message.replace("(", r"\(")):
        run_study(study_file, storage=storage, runs_dir=tmp_path / "runs", selection=Selection(**selection))
    assert not (tmp_path / "study.journal").exists()
