"""Figures. Each ``plot_*`` takes data and a matplotlib Axes and returns the Axes; ``save_*`` compose them
into PNG files with the Agg backend. Nothing here calls ``plt.show()``.
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from attention import AttentionError  # noqa: E402
from attention.readers.filterbank import window  # noqa: E402
from attention.readers.retina import glimpse, patch_squares  # noqa: E402

RIGHT, WRONG = "tab:green", "tab:red"


def to_pixels(where_xy: np.ndarray, height: int, width: int) -> np.ndarray:
    """(T, 2) locations in [-1, 1] -> (T, 2) plot coordinates (column, row) for ``imshow``."""
    x = (where_xy[:, 0] + 1) * width / 2 - 0.5
    y = (where_xy[:, 1] + 1) * height / 2 - 0.5
    return np.stack([x, y], axis=1)


def plot_image(ax: Axes, image: np.ndarray, title: str | None = None) -> Axes:
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=8)
    return ax


def plot_glimpse_path(
    ax: Axes, image: np.ndarray, locations: np.ndarray, *, correct: bool, title: str | None = None
) -> Axes:
    """The image with the glimpse path: first glimpse a filled circle, last an empty one, straight lines
    between; green when the model classified the image right, red when wrong (RAM Fig. 3)."""
    plot_image(ax, image, title)
    colour = RIGHT if correct else WRONG
    points = to_pixels(locations, *image.shape)
    ax.plot(points[:, 0], points[:, 1], "-", color=colour, linewidth=1.5)
    ax.plot(points[0, 0], points[0, 1], "o", color=colour, markersize=7)
    ax.plot(
        points[-1, 0],
        points[-1, 1],
        "o",
        markerfacecolor="none",
        markeredgecolor=colour,
        markersize=9,
        markeredgewidth=1.5,
    )
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    return ax


def retina_squares(
    location: np.ndarray, height: int, width: int, patch_size: int, num_scales: int
) -> list[tuple[int, int, int]]:
    """(top, left, side) of each scale's square in image pixels, by the sensor's own rounding rule."""
    return patch_squares(
        (location[0], location[1]), height=height, width=width, patch_size=patch_size, num_scales=num_scales
    )


def retina_view(patches: np.ndarray, location: np.ndarray, height: int, width: int) -> np.ndarray:
    """Draw a glimpse's k scales (k, g, g) back at image size: each scale upsampled to its true width and
    pasted at its place, coarsest first so finer scales lie on top; outside the retina is blank."""
    num_scales, size, _ = patches.shape
    view = np.zeros((height, width), dtype=np.float32)
    squares = retina_squares(location, height, width, size, num_scales)
    for scale in reversed(range(num_scales)):
        factor = 2**scale
        top, left, side = squares[scale]
        upsampled = np.kron(patches[scale], np.ones((factor, factor), dtype=np.float32))
        rows = slice(max(top, 0), min(top + side, height))
        cols = slice(max(left, 0), min(left + side, width))
        view[rows, cols] = upsampled[rows.start - top : rows.stop - top, cols.start - left : cols.stop - left]
    return view


def outline_retina(
    ax: Axes, location: np.ndarray, shape: tuple[int, int], patch_size: int, num_scales: int
) -> Axes:
    """Thin outlines of each scale's extent, so a glimpse on blank image still shows where it was."""
    height, width = shape
    for top, left, side in retina_squares(location, height, width, patch_size, num_scales):
        ax.add_patch(
            Rectangle(
                (left - 0.5, top - 0.5),
                side,
                side,
                fill=False,
                edgecolor="tab:orange",
                linewidth=0.8,
                alpha=0.8,
            )
        )
    ax.set_xlim(-0.5, width - 0.5)
    ax.set_ylim(height - 0.5, -0.5)
    return ax


def plot_filterbank_window(
    ax: Axes,
    image: np.ndarray,
    where: np.ndarray,
    *,
    grid_size: int,
    colour: str = RIGHT,
    alpha: float = 1.0,
    label: str | None = None,
) -> Axes:
    """The soft reader's window on the image: the grid's extent (outermost filter centres) and centre."""
    height, width = image.shape
    w = window(
        torch.as_tensor(where, dtype=torch.float32)[None], height=height, width=width, grid_size=grid_size
    )
    gx, gy, delta = (float(w[k][0]) for k in ("gx", "gy", "delta"))
    half = (grid_size - 1) / 2 * delta
    # 1-based filterbank pixels -> 0-based imshow coordinates
    ax.add_patch(
        Rectangle(
            (gx - 1 - half, gy - 1 - half),
            2 * half,
            2 * half,
            fill=False,
            edgecolor=colour,
            linewidth=1.2,
            alpha=alpha,
        )
    )
    ax.plot(gx - 1, gy - 1, "+", color=colour, markersize=6, alpha=alpha)
    if label:
        ax.text(
            gx - 1, gy - 1, label, color=colour, fontsize=6, alpha=alpha, ha="left", va="bottom", clip_on=True
        )
    ax.set_xlim(-0.5, width - 0.5)  # windows may reach past the image: keep the image's frame
    ax.set_ylim(height - 0.5, -0.5)
    return ax


def save_task_examples(images: torch.Tensor, labels: torch.Tensor, out: Path, columns: int = 8) -> Path:
    """A grid of task images (uint8 (N, S, S)) with their labels, like the paper's Fig. 2."""
    count = len(labels)
    rows = int(np.ceil(count / columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.6 * columns, 1.7 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        if i < count:
            plot_image(ax, images[i].numpy() / 255.0, title=f"label {int(labels[i])}")
        else:
            ax.axis("off")
    return _save(fig, out)


def check_glimpse_figure(config) -> None:
    """Refuse a run :func:`save_glimpse_paths` cannot draw (a model without glimpses, a game), before any
    work: ``attention train --figure`` asks before it trains."""
    from attention.tasks import require_report_command

    if config.model.name != "ram":
        raise AttentionError(
            f"run's model is '{config.model.name}', which takes no glimpses; glimpse figures need model 'ram'"
        )
    require_report_command(config.data.task, "glimpses", "glimpse figures")


def save_glimpse_paths(
    run_dir: Path,
    out: Path,
    *,
    data_dir: str | Path | None = None,
    device: str | None = None,
    count: int = 4,
    test_seed: int | None = None,
) -> Path:
    """Fig. 3 of the paper for a trained run: per test image, the path and then each step's glimpse."""
    import dataclasses

    from attention.build import pick_device
    from attention.data.mnist import load_mnist
    from attention.data.tasks import fixed_set, to_float
    from attention.evaluate import SAMPLING_SEED_OFFSET, load_trained

    device_ = pick_device(device)
    model, config = load_trained(run_dir, device_)
    check_glimpse_figure(config)
    data = config.data if test_seed is None else dataclasses.replace(config.data, test_seed=test_seed)
    test = fixed_set(load_mnist(data_dir), data, "test")
    images = to_float(test.images[:count], device_)
    # the same stream as evaluate_model, so the figure shows the glimpses that were scored
    generator = torch.Generator(device=device_).manual_seed(data.test_seed + SAMPLING_SEED_OFFSET)
    with torch.no_grad():
        rollout = model.unroll(images, sample=False, generator=generator)
    predictions = rollout.logits.argmax(dim=1).cpu()
    where = rollout.where.cpu().numpy()  # (T, B, where_dim)
    steps = where.shape[0]
    fig, axes = plt.subplots(count, steps + 1, figsize=(1.7 * (steps + 1), 1.8 * count), squeeze=False)
    reader = config.model.reader
    for i in range(count):
        image = images[i, 0].cpu().numpy()
        correct = bool(predictions[i] == test.labels[i])
        label = f"label {int(test.labels[i])}, said {int(predictions[i])}"
        if reader.name == "retina":
            plot_glimpse_path(axes[i, 0], image, where[:, i], correct=correct, title=label)
            for t in range(steps):
                one = glimpse(
                    images[i : i + 1].cpu(),
                    torch.as_tensor(where[t, i : i + 1]).float(),
                    patch_size=reader.patch_size,
                    num_scales=reader.num_scales,
                )[0, :, 0].numpy()
                plot_image(
                    axes[i, t + 1], retina_view(one, where[t, i], *image.shape), title=f"glimpse {t + 1}"
                )
                outline_retina(axes[i, t + 1], where[t, i], image.shape, reader.patch_size, reader.num_scales)
        else:
            plot_image(axes[i, 0], image, title=label)
            for t in range(steps):
                plot_filterbank_window(
                    axes[i, 0],
                    image,
                    where[t, i],
                    grid_size=reader.grid_size,
                    colour=RIGHT if correct else WRONG,
                    alpha=0.35 + 0.65 * t / max(steps - 1, 1),  # later steps more opaque
                    label=str(t + 1),
                )
                with torch.no_grad():
                    patch = model.reader(images[i : i + 1], rollout.where[t, i : i + 1])
                side = reader.grid_size
                plot_image(
                    axes[i, t + 1], patch.reshape(side, side).cpu().numpy().clip(0, 1), title=f"read {t + 1}"
                )
    return _save(fig, out)


def plot_scaling(ax: Axes, rows: list[dict]) -> Axes:
    """Log-log cost per image against image size, one line per model and batch size."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    for index, model in enumerate(models):
        colour = f"C{index}"
        for batch, style in ((128, "-o"), (1, "--s")):
            points = sorted(
                (r["image_size"], r["ms_per_image"])
                for r in rows
                if r["model"] == model and r["batch"] == batch
            )
            if points:
                sizes, costs = zip(*points, strict=True)
                ax.plot(sizes, costs, style, color=colour, markersize=4, label=f"{model}, batch {batch}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("image side (pixels)")
    ax.set_ylabel("inference time per image (ms)")
    ax.grid(True, which="both", alpha=0.3)
    # beside the axes: inside, it would hide the flat RAM line it is about
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0.0)
    return ax


def plot_curves(ax: Axes, curves: list[tuple[str, list[dict]]], metric: str) -> Axes:
    """One line per run: ``metric`` from its ``metrics.jsonl`` rows against the epoch. Refuses a metric no
    run recorded, naming the ones they did. An error that spans more than a factor of 10 (a random
    glimpse's 55% beside a retina's 1%) is drawn on a log scale, where the low curves can be told apart."""
    plotted: list[float] = []
    for index, (label, rows) in enumerate(curves):
        points = [(row["epoch"], row[metric]) for row in rows if row.get(metric) is not None]
        if points:
            epochs, values = zip(*points, strict=True)
            # matplotlib's 10 colours repeat: the next ten lines are dashed, and so on
            style = LINE_STYLES[(index // 10) % len(LINE_STYLES)]
            ax.plot(epochs, values, label=label, linewidth=1.2, color=f"C{index % 10}", linestyle=style)
            plotted += values
    if not plotted:
        recorded = ", ".join(sorted({key for _, rows in curves for row in rows for key in row} - {"epoch"}))
        raise AttentionError(
            f"no run recorded '{metric}' per epoch; choose one of: {recorded or 'none (no epochs)'}"
        )
    if "error" in metric and min(plotted) > 0 and max(plotted) > 10 * min(plotted):
        ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel(metric.replace("_pct", " (%)").replace("_", " "))
    ax.grid(True, which="both", alpha=0.3)
    # under the axes: inside, a table's dozen rows would hide the curves' ends, where they differ
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.15), borderaxespad=0.0, frameon=False)
    return ax


LINE_STYLES = ("-", "--", ":", "-.")


def save_curves(curves: list[tuple[str, list[dict]]], metric: str, out: Path, width: float = 8.0) -> Path:
    """:func:`plot_curves` as a PNG, the figure taller by a line of legend per curve (the legend is
    under the axes, so the axes keep their height)."""
    return save_figure(
        lambda ax: plot_curves(ax, curves, metric), out, size=(width, 4.0 + 0.16 * len(curves))
    )


def plot_error_against_glimpses(ax: Axes, series: dict[str, list[dict]]) -> Axes:
    """One line per series: our seed means (with their 95% intervals where there are several seeds)
    against the number of glimpses, the paper's numbers as open squares and a row's target (the better
    paper version's number, where the study names one) as a cross."""
    for index, (name, points) in enumerate(sorted(series.items())):
        color = f"C{index}"
        ours = sorted((p for p in points if "mean" in p), key=lambda p: p["glimpses"])
        if ours:
            x = [p["glimpses"] for p in ours]
            y = [p["mean"] for p in ours]
            below = [p["mean"] - p["low"] if p.get("low") is not None else 0.0 for p in ours]
            above = [p["high"] - p["mean"] if p.get("high") is not None else 0.0 for p in ours]
            ax.errorbar(x, y, yerr=[below, above], color=color, marker="o", capsize=3, label=f"{name} (ours)")
        for key, marker in (("paper", "s"), ("target", "x")):  # open squares, crosses
            marked = sorted((p for p in points if p.get(key) is not None), key=lambda p: p["glimpses"])
            if marked:
                ax.plot(
                    [p["glimpses"] for p in marked],
                    [p[key] for p in marked],
                    linestyle="none",
                    marker=marker,
                    markerfacecolor="none",
                    color=color,
                    label=f"{name} ({key})",
                )
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # glimpses are counted
    ax.set_xlabel("glimpses")
    ax.set_ylabel("test error (%)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    return ax


def save_figure(draw, out: Path, size: tuple[float, float] = (6.0, 4.0)) -> Path:
    """Draw with ``draw(ax)`` on a fresh figure and save it as a PNG."""
    fig, ax = plt.subplots(figsize=size)
    try:
        draw(ax)
    except BaseException:
        plt.close(fig)
        raise
    return _save(fig, Path(out), dpi=110)


def save_optuna_figure(name: str, study, out: Path) -> Path:
    """Save one of ``optuna.visualization.matplotlib``'s plots of ``study`` (e.g. ``plot_slice``) as a PNG."""
    import warnings

    import optuna.visualization.matplotlib as optuna_plots

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # these plots are marked experimental
        drawn = getattr(optuna_plots, name)(study)
        figure = (drawn if hasattr(drawn, "figure") else drawn.flat[0]).figure
        figure.set_size_inches(max(7.0, 4.5 * len(figure.axes)), 4.5)  # room for each field and colour bar
        # optuna places its colour bar itself; tight_layout would push the plots under it
        return _save(figure, Path(out), dpi=110, tight=False)


def _save(fig, out: Path, dpi: int = 100, tight: bool = True) -> Path:
    """Render to memory in the format of ``out``'s suffix (PNG without one), then replace ``out`` in one
    step: an interrupted save leaves the old figure (or none), never half a file."""
    from attention.runs import atomic_write_bytes

    buffer = io.BytesIO()
    try:
        if tight:
            fig.tight_layout()
        fig.savefig(buffer, dpi=dpi, format=out.suffix[1:] or "png")
    finally:
        plt.close(fig)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buffer.getvalue())
    return out
