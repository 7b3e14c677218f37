"""``attention study targets``: one table of the rows that declare a target, across studies."""

from pathlib import Path

import pytest

from attention import AttentionError
from attention.report.curves import CurveReading
from attention.report.study_results import RowResult, SeedResult
from attention.report.targets import MARKERS, targets_markdown, write_targets
from attention.study import load_study

STUDY = """title = "{title}"
seeds = [0, 1]
[evaluation]
draws = 2
independent_test_seeds = [3]
[[row]]
label = "no target"
set = {{ "data.task" = "mnist" }}
[[row]]
label = "headline"
set = {{ "data.task" = "mnist", "model.num_glimpses" = 3 }}
target = 1.5
"""


def study_file(folder: Path, name: str, title: str) -> Path:
    path = folder / f"{name}.toml"
    path.write_text(STUDY.format(title=title))
    return path


def seed(number: int, error: float, other: float, reading: str, run: str) -> SeedResult:
    return SeedResult(
        number,
        [Path("runs") / run],
        [{"train_seconds": 600.0}],
        {"mean_error_pct": error},
        {3: {"mean_error_pct": other}},
        CurveReading(reading, 100),
    )


def test_each_target_row_says_met_or_missed_by_how_much_on_how_many_seeds_and_how_training_ended(tmp_path):
    first = load_study(study_file(tmp_path, "first", "Table A"))
    second = load_study(study_file(tmp_path, "second", "Table B"))
    untargeted, headline = first.rows
    missed = [seed(0, 2.0, 2.2, "still improving", "a"), seed(1, 1.8, 1.6, "plateau", "b")]
    table = targets_markdown(
        [
            (first, [RowResult(untargeted, missed, []), RowResult(headline, missed, [])]),
            (second, [RowResult(second.rows[1], [seed(0, 1.2, 1.3, "levelled off", "c")], [1])]),
        ]
    )
    lines = [line for line in table.splitlines() if line.startswith("| Table")]
    assert lines == [
        "| Table A | headline | 2 of 2 | 1.90 ± 0.14 | 1.90 (test seed 3) | 1.50: missed by 0.40 "
        "| s0 still improving; s1 plateau | 10 min a seed |",
        "| Table B | headline | 1 of 2 (not finished: 1) | 1.20 | 1.30 (test seed 3) "
        "| 1.50: met, 0.30 below so far | s0 levelled off | 10 min a seed |",
    ]  # the row without a target is not listed


def test_a_row_two_studies_share_is_one_line_naming_both_tables(tmp_path):
    first = load_study(study_file(tmp_path, "first", "Table A"))
    second = load_study(study_file(tmp_path, "second", "Table B"))
    shared = [seed(0, 2.0, 2.2, "plateau", "same")]
    table = targets_markdown(
        [(first, [RowResult(first.rows[1], shared, [1])]), (second, [RowResult(second.rows[1], shared, [1])])]
    )
    assert [line for line in table.splitlines() if "headline" in line][0].startswith("| Table A; Table B |")
    assert table.count("| headline |") == 1


def test_studies_without_a_target_row_are_refused_naming_them(tmp_path):
    path = tmp_path / "plain.toml"
    path.write_text(
        'title = "plain"\nseeds = [0]\n[[row]]\nlabel = "only"\nset = { "data.task" = "mnist" }\n'
    )
    with pytest.raises(AttentionError, match="no row of .*plain.toml declares a target"):
        write_targets([path], runs_dir=tmp_path / "runs")


def test_into_puts_the_table_between_its_markers_and_keeps_the_prose(tmp_path):
    path = study_file(tmp_path, "first", "Table A")
    into = tmp_path / "results.md"
    into.write_text(f"# Results\n\nprose\n{MARKERS[0]}\nold\n{MARKERS[1]}\nkept\n")
    write_targets([path], runs_dir=tmp_path / "runs", into=into)  # no run has finished yet
    text = into.read_text()
    assert text.startswith("# Results\n\nprose\n") and text.endswith(f"{MARKERS[1]}\nkept\n")
    assert "| Table A | headline | 0 of 2 (not finished: 0, 1) |" in text and "\nold\n" not in text
    assert "1.50: no seed finished" in text


def test_into_a_document_without_the_markers_is_refused_and_left_alone(tmp_path):
    path = study_file(tmp_path, "first", "Table A")
    into = tmp_path / "results.md"
    into.write_text("# Results\n")
    with pytest.raises(AttentionError, match="<!-- targets -->"):
        write_targets([path], runs_dir=tmp_path / "runs", into=into)
    assert into.read_text() == "# Results\n"


def test_searches_beside_the_studies_are_passed_over_and_searches_alone_refused(tmp_path):
    path = study_file(tmp_path, "first", "Table A")
    search = tmp_path / "search.toml"
    search.write_text('title = "s"\ntrials = 2\n[space."train.learning_rate"]\nlow = 1e-4\nhigh = 1e-2\n')
    assert "| Table A | headline |" in write_targets([search, path], runs_dir=tmp_path / "runs")
    with pytest.raises(AttentionError, match="a search"):
        write_targets([search], runs_dir=tmp_path / "runs")
