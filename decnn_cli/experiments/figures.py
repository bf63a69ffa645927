"""``decnn figures``: decoded activations through the network (Fig. 1a, Fig. 2) and the test inputs a run is
most and least uncertain about (the paper's Appendix A.5)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from decnn_cli import plots
from decnn_cli.config import Precision
from decnn_cli.data.outliers import images_of
from decnn_cli.errors import DecnnError
from decnn_cli.experiments.common import load_run, predict_split, resolve_runs, test_splits
from decnn_cli.uncertainty import uncertainty_scores


@dataclass(frozen=True)
class FigureOptions:
    """``out_dir`` receives the PNGs; ``inputs`` test inputs per figure; ``layers`` to decode (1-based; default
    every second layer, as in Fig. 2); ``samples``: N sampled predictions (default: each run's ``eval.samples``);
    ``precision`` of the sampled predictions (default: each run's, as in every evaluation)."""

    out_dir: Path = Path("results/figures")
    inputs: int = 6
    layers: tuple[int, ...] = ()
    samples: int | None = None
    data_root: Path | None = None
    device: str = "auto"
    precision: Precision | None = None


def make_figures(run_paths: list[Path], options: FigureOptions = FigureOptions()) -> list[Path]:
    """For every run: ``<run>_decodings.png`` (inputs, then the decodings of the chosen layers) for methods
    with a decoder, and ``<run>_uncertainty.png`` (top row: the test inputs with the lowest vote entropy;
    bottom row: the highest)."""
    o = options
    out_dir, inputs, samples = o.out_dir, o.inputs, o.samples
    written = []
    out_dir.mkdir(parents=True, exist_ok=True)
    for path in resolve_runs(run_paths):
        run = load_run(path, o.device, o.precision)
        test = test_splits(run, o.data_root).test
        if run.method.uses_decoder:
            depth = len(run.model.decoder.adapters) if run.model.decoder.adapters is not None else run.cfg.model.depth
            chosen = list(o.layers) or list(range(2, depth + 1, 2)) or [1]
            if max(chosen) > depth or min(chosen) < 1:
                raise DecnnError(f"--layer must lie in 1..{depth} for run {path.name}")
            x = images_of(test, inputs).to(run.device)
            target = out_dir / f"{path.name}_decodings.png"
            plots.save_layer_decodings(run.model, x, chosen, target)
            written.append(target)
        limit = min(len(test), 2000)
        subset = torch.utils.data.Subset(test, range(limit))
        pred = predict_split(run, subset, samples if samples is not None else run.cfg.eval.samples, None, "")
        name = "vote_entropy" if pred.num_samples > 1 else "predictive_entropy"
        score = uncertainty_scores(pred)[name]
        order = np.argsort(score, kind="stable")
        picks = [order[:inputs], order[::-1][:inputs].copy()]
        images = images_of(subset)
        if pred.labels.ndim == 1:  # single-label: show label, prediction and score under each input
            predicted = pred.probs.argmax(-1)
            captions = [
                [f"y={pred.labels[i]} p={predicted[i]}\n{max(score[i], 0.0):.2f}" for i in pick] for pick in picks
            ]
        else:
            captions = [[f"{max(score[i], 0.0):.2f}" for i in pick] for pick in picks]
        grid = torch.stack([images[torch.as_tensor(pick)] for pick in picks])
        target = out_dir / f"{path.name}_uncertainty.png"
        plots.save_image_grid(grid, target, row_titles=[f"lowest {name}", f"highest {name}"], captions=captions)
        written.append(target)
    return written
