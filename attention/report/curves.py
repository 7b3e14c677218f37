"""What a learning curve says about how a run ended: still improving (under-trained), on a plateau, or
over-fitting. A study report gives this for every seed, so that a row that misses its target says which of
the three it was, from the numbers and not from a look at a figure.

The reading uses the validation number the run selected its weights by (the task's ``epoch_selection``,
lower is better), smoothed over a few epochs so that one lucky epoch does not decide it:

* **still improving**: the smoothed validation number fell by more than ``MOVED`` (relative) over the last
  quarter of the epochs and by more than half that over the last tenth: a longer schedule would likely
  help (a cosine schedule flattens every curve at its end, so this is a fall that outlasted the decay);
* **over-fitting**: the smoothed number ended more than ``ROSE`` above its lowest, which came before the
  last quarter, while the training error kept falling;
* **plateau**: it moved by less than ``MOVED`` over the last quarter;
* **levelled off**: it fell by more than that over the last quarter, but not over the last tenth;
* **getting worse**: it rose by more than that, without the signature of over-fitting (an unstable end).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MOVED = 0.05
"""Relative change of the smoothed validation number over the last quarter that counts as movement."""
ROSE = 0.10
"""Relative rise above the best validation number that counts as over-fitting."""
SHORTEST = 8
"""Runs with fewer epochs are not read."""

STILL_IMPROVING, OVER_FITTING, PLATEAU, LEVELLED, WORSE, TOO_SHORT = (
    "still improving",
    "over-fitting",
    "plateau",
    "levelled off",
    "getting worse",
    "too short to read",
)


@dataclass(frozen=True)
class CurveReading:
    reading: str
    epochs: int
    best: float | None = None
    best_epoch: int | None = None
    at_three_quarters: float | None = None
    """Smoothed validation number around 3/4 of the epochs."""
    at_end: float | None = None
    """Smoothed validation number over the last epochs."""
    at_nine_tenths: float | None = None
    """Smoothed validation number at the start of the last tenth of the epochs."""
    train_at_end: float | None = None
    """The last epoch's training error in % (sampled locations for a retina), where the task records one."""


def _smoothed(values: list[float], end: int, width: int) -> float:
    window = values[max(0, end - width) : end]
    return sum(window) / len(window)


def read_curve(rows: list[dict[str, Any]], selection: Callable[[dict[str, Any]], float]) -> CurveReading:
    """Read one run's metrics rows (``metrics.jsonl``); ``selection(row)`` is its validation number in the
    units to report, lower is better."""
    epochs = len(rows)
    if epochs < SHORTEST:
        return CurveReading(TOO_SHORT, epochs)
    values = [selection(row) for row in rows]
    width = max(3, epochs // 20)
    best_index = min(range(epochs), key=values.__getitem__)
    best, best_epoch = values[best_index], int(rows[best_index]["epoch"])
    # where the smoothed curve is lowest: one lucky epoch in a noisy validation set does not decide it
    smoothed = [_smoothed(values, i + 1, width) for i in range(epochs)]
    low_index = min(range(width - 1, epochs), key=smoothed.__getitem__)
    quarter, end = smoothed[(3 * epochs) // 4 - 1], smoothed[-1]
    tenth = smoothed[epochs - 1 - max(width, epochs // 10)]
    train = [row.get("train_error_pct") for row in rows]
    train_at_end = train[-1]
    moved = (quarter - end) / quarter if quarter else 0.0
    lately = (tenth - end) / tenth if tenth else 0.0
    if moved > MOVED and lately > MOVED / 2:
        reading = STILL_IMPROVING
    elif (
        end > smoothed[low_index] * (1 + ROSE)
        and low_index < (3 * epochs) // 4
        and train_at_end is not None
        and train[low_index] is not None
        and train_at_end < train[low_index]
    ):
        reading = OVER_FITTING
    elif abs(moved) <= MOVED:
        reading = PLATEAU
    else:
        reading = LEVELLED if moved > 0 else WORSE
    return CurveReading(reading, epochs, best, best_epoch, quarter, end, tenth, train_at_end)
