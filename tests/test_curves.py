"""Reading how a run ended from its learning curve, and a row's target, in a study report."""

import pytest

from attention import AttentionError
from attention.build import resolve_config
from attention.config import Config, to_dict
from attention.report.curves import (
    LEVELLED,
    OVER_FITTING,
    PLATEAU,
    STILL_IMPROVING,
    TOO_SHORT,
    WORSE,
    read_curve,
)
from attention.report.study_report import budget_lines, curve_lines, target_text
from attention.report.study_results import RowResult, SeedResult, seed_curve
from attention.runs import read_metrics, write_json, write_metrics
from attention.study import Row


def rows(validation: list[float], train: list[float] | None = None) -> list[dict]:
    train = train or [v + 1.0 for v in validation]
    return [
        {"epoch": e, "val_error_pct": v, "train_error_pct": t}
        for e, (v, t) in enumerate(zip(validation, train, strict=True), start=1)
    ]


def val(row: dict) -> float:
    return row["val_error_pct"]


def test_a_curve_still_falling_at_its_end_reads_as_still_improving():
    falling = [100.0 / e for e in range(1, 101)]  # 1.33 at 3/4, 1.0 at the end: best is the last
    reading = read_curve(rows(falling), val)
    assert reading.reading == STILL_IMPROVING and reading.best_epoch == 100
    assert reading.at_end < reading.at_three_quarters


def test_a_flat_last_quarter_reads_as_a_plateau():
    flat = [10.0 - e / 10 for e in range(50)] + [5.0 + 0.01 * (e % 3) for e in range(50)]
    assert read_curve(rows(flat), val).reading == PLATEAU


def test_validation_rising_after_its_best_while_training_error_falls_reads_as_over_fitting():
    validation = [10.0 - e / 10 for e in range(40)] + [6.0 + e / 10 for e in range(60)]  # best at epoch 40
    train = [10.0 - e / 20 for e in range(100)]  # falls all along
    reading = read_curve(rows(validation, train), val)
    assert reading.reading == OVER_FITTING and reading.best_epoch == 41
    # the same rise with a training error that rose as well is not over-fitting: just worse at the end
    assert read_curve(rows(validation, [5.0 + e / 10 for e in range(100)]), val).reading == WORSE


def test_a_curve_that_fell_over_its_last_quarter_but_not_its_last_tenth_levelled_off():
    validation = [10.0 - e / 10 for e in range(85)] + [1.6] * 15  # falls to epoch 85, then flat
    reading = read_curve(rows(validation), val)
    assert reading.reading == LEVELLED and reading.at_nine_tenths == reading.at_end == 1.6


def test_a_short_run_is_not_read():
    assert read_curve(rows([5.0, 4.0, 3.0]), val).reading == TOO_SHORT


@pytest.mark.parametrize(
    ("target", "mean", "text"),
    [
        (4.04, 4.56, "4.04: missed by 0.52"),
        (4.04, 3.94, "4.04: met, 0.10 below"),
        (4.04, 4.04, "4.04: met, 0.00 below"),
        (4.04, None, "4.04"),
        (None, 4.5, ""),
    ],
)
def test_a_rows_target_says_by_how_much_it_is_met_or_missed(target, mean, text):
    assert target_text(target, mean) == text


def test_a_target_against_a_mean_of_some_seeds_is_no_verdict_yet():
    assert target_text(4.04, 3.46, so_far=True) == "4.04: met, 0.58 below so far"
    assert target_text(4.04, 4.56, so_far=True) == "4.04: missed by 0.52 so far"


def test_the_report_reads_every_finished_seeds_last_stage(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    write_json(run / "config.json", to_dict(resolve_config(Config())))
    write_metrics(run, rows([100.0 / e for e in range(1, 41)]))
    row = Row("RAM, 6 glimpses", {}, ({},), ("RAM, 6 glimpses",), (0,))
    seed = SeedResult(seed=0, run_dirs=[run], results=[{}], main={}, curve=seed_curve(run, read_metrics(run)))
    text = "\n".join(curve_lines([RowResult(row, [seed], missing=[])]))
    assert "| RAM, 6 glimpses | 0 | 40 | 2.50 (epoch 40) | 3.45 → 2.86 → 2.57 |" in text
    assert STILL_IMPROVING in text


def test_a_row_whose_seeds_a_time_cap_cut_short_is_flagged_and_one_budget_is_not(tmp_path):
    row = Row("RAM, 8 glimpses", {}, ({},), ("RAM, 8 glimpses",), (0, 1))
    full = {"epochs_run": 200, "epochs_budget": 200, "stopped_because": "epochs"}
    capped = {"epochs_run": 117, "epochs_budget": 200, "stopped_because": "time_budget"}
    # the cap can also be met at the last epoch: the seed still ran its whole schedule
    capped_at_the_end = {"epochs_run": 200, "epochs_budget": 200, "stopped_because": "time_budget"}
    patience = {"epochs_run": 52, "epochs_budget": 60, "stopped_because": "early_stopping"}

    def seed(number, *results):
        return SeedResult(seed=number, run_dirs=[tmp_path], results=list(results), main={}, curve=None)

    def note(*seeds):
        return "\n".join(budget_lines([RowResult(row, list(seeds), missing=[])]))

    assert "- RAM, 8 glimpses: s0 200; s1 117 of 200 (time budget)" in note(seed(0, full), seed(1, capped))
    assert "- RAM, 8 glimpses: s0 200; s1 117 of 200 (time budget)" in note(
        seed(0, capped_at_the_end), seed(1, capped)
    )
    # a curriculum: each seed's stages end to end
    assert "s0 200 + 52 of 60 (early stopping); s1 117 of 200 (time budget) + 60" in note(
        seed(0, full, patience), seed(1, capped, {**full, "epochs_run": 60, "epochs_budget": 60})
    )
    # every seed cut at the same epoch trained one budget; early stopping is the recipe's own rule
    assert note(seed(0, capped), seed(1, capped)) == ""
    assert note(seed(0, full, full), seed(1, full, patience)) == ""


def test_a_damaged_metrics_file_is_refused_naming_its_line(tmp_path):
    write_metrics(tmp_path, [{"epoch": 1, "val_error_pct": 5.0}, {"epoch": 2, "val_error_pct": 4.0}])
    assert [row["epoch"] for row in read_metrics(tmp_path)] == [1, 2]
    path = tmp_path / "metrics.jsonl"
    path.write_text(path.read_text() + '{"epoch": 3, "val_err\n')  # cut off mid-line by hand
    with pytest.raises(AttentionError, match=r"metrics\.jsonl, line 3, is not valid JSON"):
        read_metrics(tmp_path)
