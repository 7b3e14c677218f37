"""What a learning curve says about how a run ended: still improving (under-trained), on a plateau, or
over-fitting. A study report gives this for every seed, so that a row that misses its target says which of
the three it was, from the numbers and not from a look at a figure.

The reading uses the validation number the run selected its weights by (the task's ``epoch_selection``,
lower is better), smoothed over a few epochs so that one lucky epoch does not decide it:

* **still improving**: the smoothed validation number fell by more than ``MOVED`` (relative) over the last
  quarter of the epochs and the best epoch is in the last tenth: more of the same training would likely
  help;
* **over-fitting**: the number ended more than ``ROSE`` above its best, the best came before the last
  quarter, and the training error kept falling after it;
* **plateau**: it moved by less than ``MOVED`` over the last quarter;
* **slowing**: it fell by more than that, but its best is not at the end;
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

STILL_IMPROVING, OVER_FITTING, PLATEAU, SLOWING, WORSE, TOO_SHORT = (
    "still improving",
    "over-fitting",
    "plateau",
    "slowing",
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
    quarter = _smoothed(values, (3 * epochs) // 4, width)
    end = _smoothed(values, epochs, width)
    train = [row.get("train_error_pct") for row in rows]
    train_at_end = train[-1]
    moved = (quarter - end) / quarter if quarter else 0.0
    if moved > MOVED and best_index >= epochs - max(1, epochs // 10):
        reading = STILL_IMPROVING
    elif (
        end > best * (1 + ROSE)
        and best_index < (3 * epochs) // 4
        and train_at_end is not None
        and train[best_index] is not None
        and train_at_end < train[best_index]
    ):
        reading = OVER_FITTING
    elif abs(moved) <= MOVED:
        reading = PLATEAU
    else:
        reading = SLOWING if moved > 0 else WORSE
    return CurveReading(reading, epochs, best, best_epoch, quarter, end, train_at_end)
