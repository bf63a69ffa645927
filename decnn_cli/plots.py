"""Pictures a person would rather look at than a table: decoded activations, reliability diagrams, ROC curves."""

from __future__ import annotations

from pathlib import Path

import torch


def save_decodings(model: torch.nn.Module, x: torch.Tensor, path: Path) -> None:
    """A grid with one row per input: the input, then g(h_1) .. g(h_L) (Fig. 1a / Appendix A.3).

    x (R, C, H, W) in [0, 1]; the model must carry a decoder.
    """
    save_layer_decodings(model, x, None, path)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _draw_reliability(ax, bins: dict, title: str, gap: bool) -> None:
    """Accuracy against confidence per filled bin (bars), optionally the gap to confidence, and the diagonal."""
    edges = bins["edges"]
    width = edges[1] - edges[0]
    filled = bins["count"] > 0
    left = edges[:-1][filled]
    accuracy = bins["accuracy"][filled]
    ax.bar(left, accuracy, width=width, align="edge", edgecolor="black", color="#4c72b0", label="accuracy")
    if gap:
        ax.bar(
            left,
            bins["confidence"][filled] - accuracy,
            bottom=accuracy,
            width=width,
            align="edge",
            color="#dd8452",
            alpha=0.5,
            label="gap to confidence",
        )
        ax.legend(loc="upper left", fontsize=8)
    ax.plot([0, 1], [0, 1], "k--", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=title)


def save_reliability_diagram(bins: dict, title: str, path: Path) -> None:
    """Accuracy against confidence per bin (bars), with the gap to confidence and the diagonal of perfect
    calibration."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 4), dpi=120)
    _draw_reliability(ax, bins, title, gap=True)
    _save(fig, path)


def save_roc_curves(curves: dict[str, tuple], title: str, path: Path) -> None:
    """ROC curves, one per label: ``curves[label] = (fpr, tpr, auroc)``."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 4), dpi=120)
    for label, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, label=f"{label} ({auc:.3f})")
    ax.plot([0, 1], [0, 1], "k:", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="false-positive rate", ylabel="true-positive rate", title=title)
    ax.legend(loc="lower right", fontsize=7)
    _save(fig, path)


def _save(fig, path: Path) -> None:
    from decnn_cli.results import atomic_file

    plt = _pyplot()
    fig.tight_layout()
    try:
        with atomic_file(path) as handle:
            fig.savefig(handle, format="png")
    finally:
        plt.close(fig)


def save_reliability_grid(panels: dict[str, dict], path: Path) -> None:
    """One reliability diagram per panel title (e.g. 'mnist: redecnn'), side by side in one PNG."""
    plt = _pyplot()
    n = len(panels)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3 * rows), dpi=110, squeeze=False)
    for ax, (title, bins) in zip(axes.flat, panels.items(), strict=False):
        _draw_reliability(ax, bins, title, gap=False)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    _save(fig, path)


def save_image_grid(
    grid: torch.Tensor,
    path: Path,
    column_titles: list[str] | None = None,
    row_titles: list[str] | None = None,
    captions: list[list[str]] | None = None,
) -> None:
    """A labelled grid of images: ``grid`` is (R, K, C, H, W) in [0, 1]; titles above the columns, on the left
    of the rows, and an optional caption under every cell."""
    plt = _pyplot()
    images = grid.detach().float().clamp(0, 1).cpu()
    rows, cols = images.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols + 0.6, 1.45 * rows + 0.3), dpi=110, squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            image = images[r, c]
            if image.shape[0] == 1:
                ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(image.permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0 and column_titles:
                ax.set_title(column_titles[c], fontsize=8)
            if c == 0 and row_titles:
                ax.set_ylabel(row_titles[r], fontsize=8)
            if captions:
                ax.set_xlabel(captions[r][c], fontsize=7)
    _save(fig, path)


@torch.no_grad()
def save_layer_decodings(model: torch.nn.Module, x: torch.Tensor, layers: list[int] | None, path: Path) -> None:
    """Fig. 2 style: one row per input, the input then the decodings g(h_l) of the chosen layers (1-based;
    None: every layer)."""
    model.eval()
    _, hidden = model(x)
    layers = layers or list(range(1, len(hidden) + 1))
    decoded = model.decoder.decode_all(hidden).float()[[layer - 1 for layer in layers]]  # (len(layers), R, ...)
    grid = torch.cat([x.unsqueeze(0).float(), decoded], dim=0).transpose(0, 1)
    save_image_grid(grid, path, column_titles=["input"] + [f"g(h_{layer})" for layer in layers])
