"""Pictures of slimming: the |γ| histogram (matplotlib, imported only when drawing)."""

from __future__ import annotations

from pathlib import Path


def plot_gamma_histogram(gammas: dict[str, list[float]], path: str | Path, title: str = "|gamma|",
                         bins: int = 80) -> Path:
    """Histogram of all |γ| (log-spaced counts), written as a PNG; returns its path."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed; selecting it here rather than at import keeps import side-effect free
    import matplotlib.pyplot as plt

    values = [v for layer in gammas.values() for v in layer]
    figure, axes = plt.subplots(figsize=(6, 3.5))
    axes.hist(values, bins=bins, color="#3b6ea8")
    axes.set_yscale("log")
    axes.set_xlabel("|gamma|")
    axes.set_ylabel("channels")
    axes.set_title(title)
    figure.tight_layout()
    path = Path(path)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
