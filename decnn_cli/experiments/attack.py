"""``decnn attack``: adversarial examples from torchattacks, crafted against one deterministic classifier.

As in the paper (Table 2, "Adversarial (FGSM)"), the attack targets a single classifier: f's plain forward
pass for ReDecNN/DecNN, dropout off, the posterior mean for BayesNN, member 0 of the ensemble. Reported: the
accuracy under attack, and the ROC-AUC of detecting adversarial inputs (positive) among clean test inputs
(negative) by each uncertainty score (higher = more uncertain).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torchattacks
from torch import nn
from torch.utils.data import Subset

from decnn_cli import metrics
from decnn_cli.engine import progress_or_new
from decnn_cli.errors import DecnnError
from decnn_cli.experiments.common import (
    EvalOptions,
    load_run,
    predict_split,
    resolve_runs,
    test_splits,
    warn_constant_outputs,
)
from decnn_cli.experiments.ood import save_pooled_roc_curves, save_run_scores, separation_row
from decnn_cli.results import write_tables
from decnn_cli.uncertainty import uncertainty_scores

# name -> (model, eps) -> torchattacks attack; iterative attacks take steps of eps / 4.
ATTACKS: dict[str, Callable[[nn.Module, float], torchattacks.Attack]] = {
    "fgsm": lambda model, eps: torchattacks.FGSM(model, eps=eps),
    "pgd": lambda model, eps: torchattacks.PGD(model, eps=eps, alpha=eps / 4, steps=10, random_start=True),
    "bim": lambda model, eps: torchattacks.BIM(model, eps=eps, alpha=eps / 4, steps=10),
    "ffgsm": lambda model, eps: torchattacks.FFGSM(model, eps=eps, alpha=1.25 * eps),
    "mifgsm": lambda model, eps: torchattacks.MIFGSM(model, eps=eps, alpha=eps / 4, steps=10),
}

SECTIONS = [
    ("auroc_vote_entropy", "Adversarial detection ROC-AUC, vote entropy (Eq. 6) as score (Table 2)", 3),
    ("auroc_predictive_entropy", "Adversarial detection ROC-AUC, predictive entropy as score", 3),
    ("accuracy_adversarial", "Accuracy (%) under attack (the method's prediction)", 2),
    ("accuracy_clean", "Accuracy (%) on the same clean inputs", 2),
    ("target_accuracy_adversarial", "Accuracy (%) under attack of the attacked classifier itself", 2),
]


def make_attack(name: str, model: nn.Module, eps: float) -> torchattacks.Attack:
    if name not in ATTACKS:
        raise DecnnError(f"unknown attack {name!r}; choose from {sorted(ATTACKS)}")
    if eps < 0:
        raise DecnnError(f"--eps must be non-negative (got {eps}); inputs live in [0, 1]")
    return ATTACKS[name](model, eps)


@dataclass(frozen=True)
class AttackOptions(EvalOptions):
    """``attack`` (a key of ``ATTACKS``) with L-inf budget ``eps`` on inputs in [0, 1]; ``samples``: N sampled
    predictions per input (default: each run's ``eval.samples``); ``limit``: attack the first test inputs only."""

    table: str = "attack"
    attack: str = "fgsm"
    eps: float = 0.1
    samples: int | None = None
    limit: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.eps <= 1.0:
            raise DecnnError(f"eps {self.eps:g} is outside [0, 1], the range of the inputs; pass a budget such as 0.1")


def evaluate_attack(run_paths: list[Path], options: AttackOptions = AttackOptions()) -> list[dict[str, Any]]:
    """Attack every run on (the first ``limit`` of) its test split; merge rows into ``results/<table>``."""
    o = options
    attack, eps, results_dir, table, limit, samples = o.attack, o.eps, o.results_dir, o.table, o.limit, o.samples
    rows = []
    pooled: dict[tuple[str, str], dict[str, list]] = {}
    with progress_or_new(o.progress, o.show_progress) as progress:
        for path in resolve_runs(run_paths):
            run = load_run(path, o.device, o.precision)
            if run.spec.task != "multiclass":
                raise DecnnError(f"run {path.name} is multi-label; attacks here need a single-label classifier")
            target = run.method.point(run.model).eval()
            adversary = make_attack(attack, target, eps)
            test = test_splits(run, o.data_root).test
            if limit is not None and limit < len(test):
                test = Subset(test, range(limit))
            n = samples if samples is not None else run.cfg.eval.samples
            clean = predict_split(run, test, n, progress, f"{path.name[:32]} clean")
            adv = predict_split(run, test, n, progress, f"{attack} eps={eps}", transform=adversary)
            neg, pos = uncertainty_scores(clean), uncertainty_scores(adv)
            rows.append(
                {
                    **run.identity(),
                    "attack": attack,
                    "eps": eps,
                    "examples": len(test),
                    "samples": clean.num_samples,
                    "constant_outputs": warn_constant_outputs(run, clean),
                    "accuracy_clean": metrics.accuracy(clean.probs, clean.labels, "multiclass"),
                    "accuracy_adversarial": metrics.accuracy(adv.probs, adv.labels, "multiclass"),
                    # point_probs come from the attacked classifier itself.
                    "target_accuracy_adversarial": metrics.accuracy(adv.point_probs, adv.labels, "multiclass"),
                    **separation_row(neg, pos),
                }
            )
            save_run_scores(run, f"{attack}-eps{eps:g}", neg, pos)
            curves = pooled.setdefault((run.cfg.data.name, f"{attack}@{eps:g}"), {})
            curves.setdefault(rows[-1]["model"], []).append((neg["vote_entropy"], pos["vote_entropy"]))
    save_pooled_roc_curves(pooled, results_dir, table)
    write_tables(
        results_dir,
        table,
        rows,
        key=["run", "attack", "eps"],
        sections=SECTIONS,
        columns=["dataset"],
        preamble="Written by `decnn attack`. Attacks from torchattacks on inputs in [0, 1], crafted against one "
        "deterministic classifier per run; clean inputs are negatives, adversarial ones positives.",
    )
    return rows
