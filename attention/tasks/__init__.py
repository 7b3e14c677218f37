"""Tasks: what a batch is, how a rollout becomes losses, how a model is evaluated, which number selects.

``TASKS`` maps each ``data.task`` name to a task class. The contract (``fit``, ``attention eval`` and the
CLI rely on nothing else, and nothing outside a task's own module tests which task it is):

* ``resolve(config) -> Config`` (static): the task's derived defaults filled in, impossible settings
  refused with an :class:`~attention.AttentionError`.
* ``model_shape(config) -> dict`` (static): the keyword arguments of
  :func:`attention.model.build_model` the task decides (``image_size``, and ``num_actions`` for a game).
* ``Task(config, *, data_dir, device)``: a task for one resolved run; it loads data only when asked.
* ``num_epochs`` and ``steps_per_epoch``: the trainer's loop (for a game, an epoch is an evaluation
  interval of frames).
* ``batches()``: the training batches of one epoch.
* ``trainer(model) -> step(batch, generator) -> (LossTerms, n)``: one batch's losses with sampled
  policies, and how many examples (images, games) it covered.
* ``epoch_metrics(training, epochs_done) -> dict``: an epoch's metrics row from the trainer's averages.
* ``validate(model) -> (selection, row)``: after an epoch; ``selection`` is lower-is-better and picks the
  best weights, ``row`` joins the epoch's metrics.
* ``selection_metric``: the key of the validation number in a metrics row (for curves).
* ``selection_label`` and ``selection_percent(selection)`` (static): how reports name and show a
  selection value (a search's objective) in %.
* ``selection_result(best) -> dict``: how the best selection value is reported in the result;
  ``result_selection(result)`` and ``epoch_selection(row)`` (static) read it back from a result or a
  metrics row, lower is better (what a search minimises and its pruner watches).
* ``evaluate(model, test_seed=None) -> dict``: the final evaluation (test error, or catch rate).
* ``evaluation_draws(model, *, test_seed, draws) -> dict``: a study's repeated evaluation (``errors_pct``
  per draw, ``averaged_error_pct``, ``first_correct`` per test example of draw 0, ``n`` examples).
* ``summary(result) -> str``: one line for the command line.
* ``report_command``: the ``attention report`` subcommand that draws a run's figures: ``"glimpses"`` for
  the image tasks, whose runs also go in ``attention report table``; ``"catch"`` for the game. Figures and
  tables made for one refuse the runs of another, naming this command.
* ``state_dict()`` / ``load_state_dict(saved)``: the task's random streams (training data order, running
  games) for a checkpoint; its keys sit at the checkpoint's top level.
"""

from __future__ import annotations

from attention.registry import Registry

TASKS = Registry("task")

EVALUATION_SEED_OFFSET = 7919
"""Offset between a test seed (of images, or of games) and the seed of the evaluation's own random stream
(sampled locations, the policies playing the games), so the two never share a stream by accident."""


def _register() -> None:
    from attention.tasks.catch import CatchTask
    from attention.tasks.classify import ClassifyTask

    for name in ("mnist", "translated", "cluttered"):
        TASKS.register(name)(ClassifyTask)
    TASKS.register("catch")(CatchTask)


_register()


def require_report_command(task: str, command: str, what: str) -> None:
    """Refuse, in one line naming the command that fits, to draw ``what`` (made by ``attention report
    command``) for a run of a task reported by another (:attr:`report_command` in the contract above)."""
    from attention import AttentionError

    fits = TASKS.get(task).report_command
    if fits != command:
        raise AttentionError(f"{what} cannot show a '{task}' run: use `attention report {fits}` for it")
