"""Every committed study and search file runs end to end in its smoke variant, and reports."""

from pathlib import Path

import pytest

from attention.config import tomllib

STUDIES = Path(__file__).resolve().parents[1] / "studies"
FILES = sorted(STUDIES.glob("*.toml"))
SEARCHES = [p for p in FILES if "space" in tomllib.loads(p.read_text())]


@pytest.mark.parametrize("path", [p for p in FILES if p not in SEARCHES], ids=lambda p: p.stem)
def test_study_smoke_run_trains_every_unit_and_reports(path, mnist_dir, tmp_path):
    from attention.report.study_report import write_study_report
    from attention.study_run import run_study

    storage, runs = f"journal:{tmp_path / 'study.journal'}", tmp_path / "runs"
    [summary] = run_study(
        path, workers=1, storage=storage, runs_dir=runs, data_dir=mnist_dir, smoke=True, progress=False
    )
    assert summary["finished"] == summary["units"] > 0
    write_study_report(path, runs_dir=runs, out_dir=tmp_path / "report", data_dir=mnist_dir, smoke=True)
    report = (tmp_path / "report" / "report.md").read_text()
    assert "not finished" not in report


@pytest.mark.parametrize("path", SEARCHES, ids=lambda p: p.stem)
def test_search_smoke_run_and_report(path, mnist_dir, tmp_path):
    from attention.search import run_search
    from attention.search_report import write_search_report

    storage = f"journal:{tmp_path / 'search.journal'}"
    summary = run_search(
        path,
        workers=1,
        storage=storage,
        runs_dir=tmp_path / "runs",
        data_dir=mnist_dir,
        smoke=True,
        progress=False,
    )
    assert summary.get("complete", 0) >= 1
    written = write_search_report(path, storage=storage, out_dir=tmp_path / "report", smoke=True)
    assert (tmp_path / "report" / "best-recipe.toml") in written
    # the objective is named as the search's task measures it (an error, or a game's miss rate)
    from attention.search import load_search
    from attention.search_report import search_task

    label = search_task(load_search(path)).selection_label
    assert f"best {label} %" in (tmp_path / "report" / "report.md").read_text()
