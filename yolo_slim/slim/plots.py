"""Pictures of slimming: |γ| histograms, channels per layer, the Pareto front of a sweep.

Drawn on ``matplotlib.figure.Figure`` objects, not pyplot: saving to a file needs no backend, and
choosing one (``matplotlib.use``) would change the caller's session, e.g. turn off a notebook's
inline plots.
"""

from __future__ import annotations

from pathlib import Path

from matplotlib.figure import Figure

from yolo_slim.models import YOLOv5
from yolo_slim.slim.report import format_report, report


def plot_gamma_histogram(gammas: dict[str, list[float]], path: str | Path, title: str = "|gamma|",
                         bins: int = 80) -> Path:
    """Histogram of all |γ| (log-spaced counts), written as a PNG; returns its path."""
    values = [v for layer in gammas.values() for v in layer]
    figure = Figure(figsize=(6, 3.5))
    axes = figure.subplots()
    axes.hist(values, bins=bins, color="#3b6ea8")
    axes.set_yscale("log")
    axes.set_xlabel("|gamma|")
    axes.set_ylabel("channels")
    axes.set_title(title)
    return _save(figure, path)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both cost (lower) and accuracy (higher), by cost."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front, best = [], float("-inf")
    for index in order:
        if points[index][1] > best:
            front.append(index)
            best = points[index][1]
    return front


def plot_pareto(points: list[tuple[str, float, float, bool]], path: str | Path,
                title: str = "mAP50-95 against GFLOPs") -> Path:
    """Scatter of (label, GFLOPs, mAP, is_dense) with the dense model marked and the Pareto front drawn."""
    figure = Figure(figsize=(6, 4))
    axes = figure.subplots()
    costs = [(gflops, score) for _, gflops, score, _ in points]
    for label, gflops, score, dense in points:
        axes.scatter(gflops, score, marker="*" if dense else "o", s=160 if dense else 40,
                     color="#c0392b" if dense else "#3b6ea8", zorder=3)
        axes.annotate(label, (gflops, score), textcoords="offset points", xytext=(4, 4), fontsize=8)
    front = pareto_front(costs)
    if len(front) > 1:
        axes.plot([costs[i][0] for i in front], [costs[i][1] for i in front], color="#7f8c8d", linestyle="--",
                  zorder=2, label="Pareto front")
        axes.legend(loc="best")  # where it covers the fewest points (the dense star is often bottom right)
    axes.set_xlabel("GFLOPs")
    axes.set_ylabel("mAP50-95")
    axes.set_title(title)
    return _save(figure, path)


def plot_channels(layers: list[tuple[str, int, int]], path: str | Path, title: str = "channels per layer") -> Path:
    """Bar chart of (label, channels before, channels after) per layer, written as a PNG."""
    figure = Figure(figsize=(max(6.0, 0.3 * len(layers)), 3.5))
    axes = figure.subplots()
    positions = range(len(layers))
    axes.bar(positions, [before for _, before, _ in layers], color="#bdc3c7", label="before")
    axes.bar(positions, [after for _, _, after in layers], color="#3b6ea8", label="after")
    axes.set_xticks(list(positions), [label for label, _, _ in layers], rotation=90, fontsize=7)
    axes.set_ylabel("BatchNorm channels")
    axes.set_title(title)
    axes.legend()
    return _save(figure, path)


def _save(figure: Figure, path: str | Path) -> Path:
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    return path


def write_prune_artifacts(folder: str | Path, before: YOLOv5, after: YOLOv5, imgsz: int, suffix: str = "",
                          histogram_title: str = "|gamma| before pruning") -> dict[str, Path]:
    """What one prune leaves in a run folder: ``layers{suffix}.txt`` (the per-layer table),
    ``gamma_histogram{suffix}.png`` (|γ| of ``before``) and ``channels{suffix}.png``.

    Returns the two charts by the tag they are logged under (``slim/gamma_histogram{suffix}``,
    ``slim/channels{suffix}``).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    slim_report = report(before, after, imgsz)
    (folder / f"layers{suffix}.txt").write_text(format_report(slim_report) + "\n")
    histogram = plot_gamma_histogram(slim_report.gammas, folder / f"gamma_histogram{suffix}.png",
                                     title=histogram_title)
    channels = plot_channels([(f"{layer.index} {layer.module}", layer.bn_channels_before, layer.bn_channels_after)
                              for layer in slim_report.layers if layer.bn_channels_before],
                             folder / f"channels{suffix}.png", title="BatchNorm channels per layer, before and after")
    return {f"slim/gamma_histogram{suffix}": histogram, f"slim/channels{suffix}": channels}
