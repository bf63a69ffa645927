"""The ``decnn`` command line: parse options, build a RunConfig, call ``experiments.*``, print a rich table.

Only typer, rich, pydantic and the two registries (which import no torch) load with this module; each command
imports the experiment it runs, so ``--help``, ``decnn methods`` and a misspelt name answer at once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import Enum, StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar, get_args

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from decnn_cli.config import RECIPE_KEYS, RUN_SECTIONS, Precision, read_toml
from decnn_cli.data import DATASETS
from decnn_cli.detectors import DETECTORS, FIT_EXAMPLES
from decnn_cli.errors import ConfigError, DecnnError
from decnn_cli.methods import METHODS

app = typer.Typer(
    name="decnn",
    help="Decodable Neural Networks: train, evaluate uncertainty, attack, compose and check fairness.",
    no_args_is_help=False,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console()
err = Console(stderr=True)


class Launcher(StrEnum):
    """Where ``decnn reproduce`` trains its runs."""

    here = "here"
    slurm = "slurm"
    local = "local"


class EvalSplit(StrEnum):
    """The split ``decnn fairness`` and ``decnn eval-calibration`` evaluate."""

    test = "test"
    val = "val"


MethodName = Enum("MethodName", {name: name for name in METHODS}, type=str)

T = TypeVar("T")


def _guard(action: Callable[[], T]) -> T:
    """Run ``action``; a DecnnError becomes one red line on stderr and its exit code (2 for config errors)."""
    try:
        return action()
    except DecnnError as error:
        err.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        raise typer.Exit(error.exit_code) from None
    except KeyboardInterrupt:
        err.print("[bold red]interrupted:[/] nothing unfinished was kept")
        raise typer.Exit(130) from None


def _recipe_sections(recipe: Path | None) -> dict[str, Any]:
    """The run sections of a recipe (other top-level tables belong to `decnn reproduce`)."""
    if recipe is None:
        return {}
    raw = read_toml(recipe)
    unknown = sorted(set(raw) - set(RUN_SECTIONS) - RECIPE_KEYS - {"out_dir"})
    if unknown:
        raise ConfigError(
            f"recipe {recipe} has unknown top-level key(s) {unknown}; "
            f"allowed: {sorted(set(RUN_SECTIONS) | RECIPE_KEYS)}"
        )
    return {k: v for k, v in raw.items() if k in RUN_SECTIONS or k == "out_dir"}


def _metrics_table(title: str, rows: dict[str, Any]) -> Table:
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in rows.items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    return table


RecipeOpt = Annotated[Path | None, typer.Option("--recipe", "-r", help="TOML recipe with run sections (see recipes/).")]
SetOpt = Annotated[
    list[str] | None, typer.Option("--set", "-s", help="Override any config key: section.key=value (repeatable).")
]
DataRootOpt = Annotated[
    Path | None, typer.Option("--data-root", help="Data root in torchvision's layout (else $DECNN_DATA_ROOT).")
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto (default), cpu, cuda or cuda:N.")]
PrecisionName = Enum("PrecisionName", {name: name for name in get_args(Precision)}, type=str)


@app.command()
def train(
    recipe: RecipeOpt = None,
    method: Annotated[MethodName | None, typer.Option("--method", "-m", help="Method to train.")] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            "--dataset",
            "-d",
            help="Dataset to train on: a name of `decnn datasets`, folder:PATH (an image-folder tree, one subfolder "
            "per class; a tree of WAV files, as log-mel spectrograms; or MNIST-style IDX files) or torchvision:NAME "
            "(e.g. torchvision:KMNIST, from the data root).",
        ),
    ] = None,
    arch: Annotated[str | None, typer.Option("--arch", help="Classifier: mlp, cnn, linear or resnet18.")] = None,
    decoder: Annotated[str | None, typer.Option("--decoder", help="Shared decoder: mlp or resnet.")] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Seed of init, shuffling and paths.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs", help="Training epochs.")] = None,
    subset: Annotated[int | None, typer.Option("--subset", help="Cap every split at N examples (smoke runs).")] = None,
    data_root: DataRootOpt = None,
    download: Annotated[
        bool, typer.Option("--download", help="Download missing MNIST, Fashion-MNIST or torchvision: files.")
    ] = False,
    device: DeviceOpt = None,
    precision: Annotated[
        PrecisionName | None,
        typer.Option(
            "--precision", help="fp32, bf16, or auto (bf16 where the device runs it natively); sets train.precision."
        ),
    ] = None,
    target: Annotated[
        str | None, typer.Option("--target", help="What to predict: a CelebA attribute, or digit/binary/color.")
    ] = None,
    holdout_attr: Annotated[
        str | None, typer.Option("--holdout-attr", help="CelebA attribute held out of training.")
    ] = None,
    compose_with: Annotated[
        Path | None, typer.Option("--compose-with", help="Checkpoint of a pretrained m (Eq. 7).")
    ] = None,
    compose_target: Annotated[
        str | None, typer.Option("--compose-target", help="reconstruction (Eq. 7) or direct.")
    ] = None,
    protect_with: Annotated[
        Path | None, typer.Option("--protect-with", help="Checkpoint of a protected-attribute classifier (Eq. 8).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder for run folders (default results/runs).")
    ] = None,
    overrides: SetOpt = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train one method on one dataset; write results/runs/<dataset>__<method>__seed<k>__<time>/."""

    def action() -> None:
        from decnn_cli.resolve import build_config

        cfg = build_config(
            _recipe_sections(recipe),
            {
                "method.name": method.value if method else None,
                "data.name": dataset,
                "model.arch": arch,
                "model.decoder": decoder,
                "train.seed": seed,
                "train.epochs": epochs,
                "data.subset": subset,
                "data.root": str(data_root) if data_root else None,
                "data.download": True if download else None,
                "train.device": device,
                "train.precision": precision.value if precision else None,
                "data.holdout_attr": holdout_attr,
                "data.target": target,
                "method.compose_with": str(compose_with) if compose_with else None,
                "method.compose_target": compose_target,
                "method.protect_with": str(protect_with) if protect_with else None,
                "out_dir": str(out_dir) if out_dir else None,
            },
            overrides,
        )
        from decnn_cli.experiments.train import train as run_train

        outcome = run_train(cfg, console=err, show_progress=not quiet)
        if outcome.run_dir is None:  # a non-zero rank of a torchrun job: rank 0 reports
            return
        shown = {k: v for k, v in outcome.metrics.items() if v is not None and not isinstance(v, list | dict)}
        out.print(_metrics_table(f"{cfg.method.name} on {cfg.data.name}", shown))
        if "recon_mse_per_layer" in outcome.metrics:
            layers = ", ".join(f"{v:.4f}" for v in outcome.metrics["recon_mse_per_layer"])
            out.print(f"reconstruction MSE per layer: {layers}")
        out.print(f"run folder: {outcome.run_dir}")

    _guard(action)


RunsArg = Annotated[list[Path], typer.Argument(help="Run folders, or folders holding run folders.")]
ResultsOpt = Annotated[Path, typer.Option("--results", help="Folder for the aggregated CSV + Markdown tables.")]
SamplesOpt = Annotated[
    int | None, typer.Option("--samples", "-n", min=1, help="N sampled predictions per input (at least 1).")
]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
EvalPrecisionOpt = Annotated[
    PrecisionName | None,
    typer.Option("--precision", help="fp32, bf16 or auto; default: each run's eval.precision, else its training's."),
]


def _shared(
    results: Path,
    table: str,
    data_root: Path | None,
    device: str | None,
    quiet: bool,
    precision: PrecisionName | None = None,
) -> dict[str, Any]:
    """The options every evaluation command shares (``experiments.common.EvalOptions``)."""
    return {
        "results_dir": results,
        "table": table,
        "data_root": data_root,
        "device": device or "auto",
        "precision": precision.value if precision else None,
        "show_progress": not quiet,
    }


def _rows_table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> Table:
    table = Table(title=title, header_style="bold")
    for column in columns:
        table.add_column(column, justify="left" if column in ("dataset", "model", "run", "outlier") else "right")
    for row in rows:
        table.add_row(*(f"{row[c]:.4g}" if isinstance(row.get(c), float) else str(row.get(c, "")) for c in columns))
    return table


@app.command("eval-calibration")
def eval_calibration(
    runs: RunsArg,
    table: Annotated[
        str | None,
        typer.Option("--table", help="Results table (default: calibration; calibration_val with --split val)."),
    ] = None,
    samples: SamplesOpt = None,
    split: Annotated[
        EvalSplit,
        typer.Option("--split", help="The split evaluated: test (the tables), or val to choose a setting such as N."),
    ] = EvalSplit.test,
    data_root: DataRootOpt = None,
    device: DeviceOpt = None,
    precision: EvalPrecisionOpt = None,
    results: ResultsOpt = Path("results"),
    quiet: QuietOpt = False,
) -> None:
    """Accuracy, ECE (15 bins, %), NLL, Brier and misclassification ROC-AUC per run (Tables 1a, 1b, 4a)."""

    def action() -> None:
        from decnn_cli.experiments.calibration import CalibrationOptions, evaluate_calibration

        name = table or ("calibration" if split == EvalSplit.test else f"calibration_{split.value}")
        shared = _shared(results, name, data_root, device, quiet, precision)
        rows = evaluate_calibration(runs, CalibrationOptions(**shared, samples=samples, split=split.value))
        columns = ["dataset", "model", "seed", "accuracy", "ece", "nll", "misclass_auroc_vote_entropy"]
        out.print(_rows_table("calibration", rows, columns))
        out.print(f"tables: {results / name}.csv, {results / name}.md")

    _guard(action)


LimitOpt = Annotated[
    int | None, typer.Option("--limit", min=1, help="Use the first N inputs of each set (CPU-sized runs).")
]


@app.command("eval-ood")
def eval_ood(
    runs: RunsArg,
    outlier: Annotated[
        list[str],
        typer.Option(
            "--outlier",
            "-o",
            help="Outlier set (repeatable): a dataset (mnist, fashion, celeba, digits, ..., torchvision:NAME), "
            "folder:PATH (every image under PATH, or its IDX files), patches, corrupt:<name>[@severity], corrupt:all, "
            "celeba-holdout:<Attribute>, attack:<name>[@eps] (e.g. attack:fgsm@0.25).",
        ),
    ],
    detector: Annotated[
        list[str] | None,
        typer.Option(
            "--detector",
            "-D",
            help=f"Post-hoc detector beside the sampled scores (repeatable): {', '.join(DETECTORS)} or all "
            "(pytorch-ood's, and the decoder's reconstruction error).",
        ),
    ] = None,
    fit_examples: Annotated[
        int, typer.Option("--fit-examples", min=1, help="Training examples the fitted detectors see at most.")
    ] = FIT_EXAMPLES,
    detectors_only: Annotated[
        bool,
        typer.Option(
            "--detectors-only",
            help="Only the detectors' scores: no sampled predictions, one forward pass per input (the sampled "
            "scores of the same runs may come from another evaluation at a larger N).",
        ),
    ] = False,
    table: Annotated[str, typer.Option("--table", help="Name of the results table.")] = "ood",
    samples: SamplesOpt = None,
    limit: LimitOpt = None,
    data_root: DataRootOpt = None,
    device: DeviceOpt = None,
    precision: EvalPrecisionOpt = None,
    results: ResultsOpt = Path("results"),
    quiet: QuietOpt = False,
) -> None:
    """ROC-AUC / AUPR / FPR@95%TPR of detecting outliers by uncertainty (Tables 2, 3); outliers are positive."""

    def action() -> None:
        from decnn_cli.data.sources import check_outliers
        from decnn_cli.detectors import parse_detectors

        check_outliers(outlier)  # names and folders before any model or dataset is loaded
        detectors = parse_detectors(detector or ())
        from decnn_cli.experiments.ood import OODOptions, evaluate_ood

        shared = _shared(results, table, data_root, device, quiet, precision)
        options = OODOptions(
            **shared,
            outliers=tuple(outlier),
            samples=samples,
            limit=limit,
            detectors=detectors,
            fit_examples=fit_examples,
            sampled=not detectors_only,
        )
        rows = evaluate_ood(runs, options)
        columns = ["dataset", "model", "seed", "outlier"]
        columns += [] if detectors_only else ["auroc_vote_entropy", "auroc_predictive_entropy"]
        columns += [f"auroc_{name}" for name in detectors if any(f"auroc_{name}" in row for row in rows)]
        out.print(_rows_table("out-of-distribution detection", rows, columns))
        out.print(f"tables: {results / table}.csv, {results / table}.md")

    _guard(action)


@app.command()
def attack(
    runs: RunsArg,
    eps: Annotated[
        float, typer.Option("--eps", min=0.0, max=1.0, help="L-inf budget on inputs in [0, 1] (between 0 and 1).")
    ] = 0.1,
    name: Annotated[str, typer.Option("--attack", help="fgsm, pgd, bim, ffgsm or mifgsm (torchattacks).")] = "fgsm",
    table: Annotated[str, typer.Option("--table", help="Name of the results table.")] = "attack",
    samples: SamplesOpt = None,
    limit: LimitOpt = None,
    data_root: DataRootOpt = None,
    device: DeviceOpt = None,
    precision: EvalPrecisionOpt = None,
    results: ResultsOpt = Path("results"),
    quiet: QuietOpt = False,
) -> None:
    """Attack each run's single classifier; accuracy under attack and ROC-AUC of detecting the attack (Table 2)."""

    def action() -> None:
        from decnn_cli.experiments.attack import AttackOptions, evaluate_attack

        shared = _shared(results, table, data_root, device, quiet, precision)
        rows = evaluate_attack(runs, AttackOptions(**shared, attack=name, eps=eps, samples=samples, limit=limit))
        columns = ["dataset", "model", "seed", "attack", "eps", "accuracy_adversarial", "auroc_vote_entropy"]
        out.print(_rows_table("adversarial detection", rows, columns))
        out.print(f"tables: {results / table}.csv, {results / table}.md")

    _guard(action)


@app.command()
def fairness(
    runs: RunsArg,
    protected: Annotated[
        str | None, typer.Option("--protected", help="Protected attribute (CelebA, e.g. Bald); colour for colored-*.")
    ] = None,
    table: Annotated[str, typer.Option("--table", help="Name of the results table.")] = "fairness",
    split: Annotated[
        EvalSplit, typer.Option("--split", help="The split evaluated (and halved for the probe).")
    ] = EvalSplit.test,
    probe_examples: Annotated[
        int, typer.Option("--probe-examples", help="Examples in each half (fit / score) of the probe.")
    ] = 5000,
    protector: Annotated[
        Path | None,
        typer.Option(
            "--protector",
            help="Checkpoint of a protected-attribute classifier m: its balanced accuracy on the decodings g(h_l) "
            "of runs with a decoder (default: the m of a run's Eq. 8).",
        ),
    ] = None,
    erase: Annotated[
        bool,
        typer.Option(
            "--erase",
            help="Also erase the attribute linearly from h_L (LEACE, fitted on the training split) and report the "
            "probe on what is left and the task accuracy of a linear head refitted on it.",
        ),
    ] = False,
    erase_balanced: Annotated[
        bool,
        typer.Option(
            "--erase-balanced",
            help="As --erase, with the eraser fitted on the training split's (label, group) cells weighted equally: "
            "it removes what moves with the attribute within each class, not the label's own direction (for "
            "training splits that tie the attribute to the label).",
        ),
    ] = False,
    data_root: DataRootOpt = None,
    device: DeviceOpt = None,
    precision: EvalPrecisionOpt = None,
    results: ResultsOpt = Path("results"),
    quiet: QuietOpt = False,
) -> None:
    """Per-group F1 / AP / ECE of the task (Table 7) and a linear probe for the protected attribute (Table 8)."""

    def action() -> None:
        from decnn_cli.experiments.fairness import FairnessOptions, evaluate_fairness

        shared = _shared(results, table, data_root, device, quiet, precision)
        options = FairnessOptions(
            **shared,
            protected=protected,
            split=split.value,
            probe_examples=probe_examples,
            protector=protector,
            erase=erase,
            erase_balanced=erase_balanced,
        )
        rows = evaluate_fairness(runs, options)
        columns = ["dataset", "model", "seed", "f1_group0", "f1_group1", "f1_gap", "probe_f1"]
        if any("missing_groups" in row and row["missing_groups"] for row in rows):
            columns.append("missing_groups")
        if any("protector_balanced_accuracy_decoded" in row for row in rows):
            columns.append("protector_balanced_accuracy_decoded")
        if erase or erase_balanced:
            columns += ["erased_probe_f1", "refit_accuracy", "erased_accuracy"]
        out.print(_rows_table("fairness", rows, columns))
        out.print(f"tables: {results / table}.csv, {results / table}.md")

    _guard(action)


@app.command()
def report(
    runs: RunsArg,
    table: Annotated[str, typer.Option("--table", help="Name of the results table.")] = "training",
    results: ResultsOpt = Path("results"),
) -> None:
    """Aggregate the training metrics of run folders into results/<table>.csv and .md (mean (std) over seeds)."""

    def action() -> None:
        from decnn_cli.experiments.report import ReportOptions, report_runs

        rows = report_runs(runs, ReportOptions(results_dir=results, table=table))
        columns = ["dataset", "model", "seed", "test_accuracy", "test_ece", "seconds_per_epoch"]
        out.print(_rows_table("training", rows, columns))
        out.print(f"tables: {results / table}.csv, {results / table}.md")

    _guard(action)


@app.command()
def bench(
    method: Annotated[list[str] | None, typer.Option("--method", "-m", help="Methods to measure (repeatable).")] = None,
    decoder: Annotated[
        list[str] | None,
        typer.Option("--decoder", help="Decoders: mlp, resnet (repeatable; default: both on CUDA, mlp on CPU)."),
    ] = None,
    shape: Annotated[str, typer.Option("--shape", help="Input shape CxHxW.")] = "1x28x28",
    batch: Annotated[
        int | None, typer.Option("--batch", min=1, help="Training batch (default 128; 8 for resnet on CPU).")
    ] = None,
    samples: Annotated[
        list[int] | None,
        typer.Option("--samples", "-n", min=1, help="N sampled predictions (repeatable; default 32 and 128)."),
    ] = None,
    repeats: Annotated[int | None, typer.Option("--repeats", min=1, help="Timed steps per method.")] = None,
    sample_inputs: Annotated[
        int | None,
        typer.Option("--sample-inputs", min=1, help="Inputs N predictions are drawn for (default: one eval batch)."),
    ] = None,
    precision: Annotated[
        list[PrecisionName] | None,
        typer.Option("--precision", help="fp32, bf16 (repeatable; default fp32, and bf16 where it is native)."),
    ] = None,
    device: DeviceOpt = None,
    overrides: SetOpt = None,
    table: Annotated[str, typer.Option("--table", help="Name of the results table.")] = "bench",
    results: ResultsOpt = Path("results"),
) -> None:
    """Step time, memory, FLOPs and the cost of uncertainty of every method side by side, fp32 beside bf16.

    With no options it sizes itself to the device and says what it chose."""

    def action() -> None:
        from decnn_cli.experiments.bench import BenchOptions, run_bench

        try:
            in_shape = tuple(int(v) for v in shape.lower().split("x"))
            assert len(in_shape) == 3
        except (ValueError, AssertionError):
            raise ConfigError(f"--shape {shape!r} must look like 1x28x28 (channels x height x width)") from None
        chosen = tuple(p.value for p in precision or ())
        if "auto" in chosen:
            raise ConfigError("--precision of bench names what to measure: fp32 or bf16 (repeatable), not auto")
        options = BenchOptions(
            methods=tuple(method or ()),
            decoders=tuple(decoder or ()),
            overrides=tuple(overrides or ()),
            in_shape=in_shape,
            batch=batch,
            samples=tuple(samples or ()),
            sample_inputs=sample_inputs,
            precisions=chosen,
            repeats=repeats,
            device=device or "auto",
            results_dir=results,
            table=table,
        )
        rows = run_bench(options, say=lambda line: err.print(line, highlight=False, soft_wrap=True))
        sampled = sorted({k for row in rows for k in row if k.startswith("sample_ms_per_input_n")}, key=len)
        columns = [
            "decoder",
            "model",
            "precision",
            "step_ms",
            "step_ratio",
            "bf16_speedup",
            "flop_utilisation",
            "memory_mb",
            *sampled,
        ]
        out.print(_rows_table(f"bench on {rows[0]['device']}", rows, columns))
        out.print(f"tables: {results / table}.csv, {results / table}.md")

    _guard(action)


@app.command()
def reproduce(
    recipe: Annotated[Path, typer.Argument(help="Recipe TOML, e.g. recipes/table1/cpu.toml.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the runs (done / todo) and stop.")] = False,
    partial: Annotated[
        bool,
        typer.Option("--partial", help="Train nothing: tables from the finished runs only, naming the missing ones."),
    ] = False,
    shard: Annotated[
        str | None,
        typer.Option(
            "--shard",
            help="K/N: train and evaluate only the K-th of N deterministic slices of the runs (one per process of a "
            "Slurm array, an indexed job, N shells); the shard that ends last writes the tables.",
        ),
    ] = None,
    launcher: Annotated[
        Launcher,
        typer.Option(
            "--launcher",
            help="Where runs train: here (this process); slurm (one submitit job per run, or per shard with "
            "--set launcher.shards=N; settings: --set launcher.partition=... etc.); local (the same jobs as "
            "processes of this machine, through submitit's local executor).",
        ),
    ] = Launcher.here,
    data_root: DataRootOpt = None,
    device: DeviceOpt = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder for run folders (default results/runs).")
    ] = None,
    overrides: SetOpt = None,
    results: ResultsOpt = Path("results"),
    quiet: QuietOpt = False,
) -> None:
    """Run a recipe's grid (skipping finished runs), its evaluations, and compare with the paper's numbers."""

    def action() -> None:
        from decnn_cli.experiments.reproduce import Shard, dry_run_lines, load_recipe
        from decnn_cli.experiments.reproduce import reproduce as run_recipe
        from decnn_cli.experiments.reproduce.launching import launch, launcher_settings, split_launcher_overrides

        part = Shard.parse(shard) if shard is not None else None
        run_sets, launcher_sets = split_launcher_overrides(overrides)
        settings = launcher_settings(launcher_sets)
        if launcher is Launcher.here and launcher_sets:
            raise ConfigError("launcher.* settings are for --launcher slurm or --launcher local; add one")
        if launcher is not Launcher.here and not dry_run:
            if part is not None or partial:
                raise ConfigError(
                    "--launcher submits every run: leave out --shard and --partial (for shards as jobs, "
                    "--set launcher.shards=N)"
                )
            outcome = launch(
                recipe,
                launcher.value,
                settings,
                results,
                data_root=data_root,
                out_dir=out_dir,
                device=device or "auto",
                overrides=run_sets,
                console=err,
                show_progress=not quiet,
            )
        else:
            outcome = run_recipe(
                recipe,
                results,
                data_root=data_root,
                out_dir=out_dir,
                device=device or "auto",
                dry_run=dry_run,
                overrides=run_sets,
                console=err,
                show_progress=not quiet,
                partial=partial,
                shard=part,
            )
        if dry_run:
            lines = dry_run_lines(outcome)
            out.print("\n".join(lines), highlight=False, soft_wrap=True)
            todo = sum(line.startswith("todo") for line in lines)
            out.print(f"{len(lines)} runs{f' in shard {part}' if part else ''}, {todo} to train")
            return
        table = load_recipe(recipe).table
        if outcome is None:
            out.print(
                f"shard {part}: its runs are trained and evaluated; the shard that ends last writes "
                f"{results / table.name}.md (or run `decnn reproduce {recipe} --partial`)",
                highlight=False,
                soft_wrap=True,
            )
            return
        cells = int(outcome["runs"].gt(0).sum())
        against = "compared with the paper" if table.paper else "(no paper table to compare with)"
        out.print(f"{cells} measured cells {against}: {results / table.name}.md")

    _guard(action)


@app.command()
def figures(
    runs: RunsArg,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the PNGs.")] = Path("results/figures"),
    inputs: Annotated[int, typer.Option("--inputs", help="Test inputs per figure.")] = 6,
    layer: Annotated[list[int] | None, typer.Option("--layer", help="Layers to decode (1-based, repeatable).")] = None,
    samples: SamplesOpt = None,
    data_root: DataRootOpt = None,
    device: DeviceOpt = None,
    precision: EvalPrecisionOpt = None,
) -> None:
    """Decoded activations through the network (Fig. 1a / 2) and the least and most uncertain test inputs."""

    def action() -> None:
        from decnn_cli.experiments.figures import FigureOptions, make_figures

        options = FigureOptions(
            out_dir=out_dir,
            inputs=inputs,
            layers=tuple(layer or ()),
            samples=samples,
            data_root=data_root,
            device=device or "auto",
            precision=precision.value if precision else None,
        )
        for path in make_figures(runs, options):
            out.print(f"wrote {path}")

    _guard(action)


@app.command("methods")
def list_methods() -> None:
    """List the registered methods, in the paper's order, with what they can do."""
    table = Table(title="methods")
    table.add_column("method", no_wrap=True)
    table.add_column("what it is")
    table.add_column("predicts with", no_wrap=True)
    table.add_column("capabilities", no_wrap=True)
    for name, spec in METHODS.items():
        flags = {"decoder": spec.uses_decoder, "sampled": spec.stochastic, "Eq. 7/8": spec.accepts_pretrained_terms}
        table.add_row(name, spec.summary, spec.predictive, ", ".join(k for k, on in flags.items() if on))
    out.print(table)


@app.command("datasets")
def list_datasets() -> None:
    """List the registered datasets, the prefixed forms and the torchvision datasets they take."""
    from decnn_cli.data import PREFIXED
    from decnn_cli.data.sources import TORCHVISION_SETS

    table = Table("dataset", "what it is", "needs --data-root", title="datasets")
    for name, entry in DATASETS.items():
        table.add_row(name, entry.summary, "yes" if entry.needs_root else "no (bundled)")
    for prefix, entry in PREFIXED.items():
        form = f"{prefix}PATH" if prefix == "folder:" else f"{prefix}NAME"
        table.add_row(form, entry.summary, "yes" if entry.needs_root else "no (the path)")
    for name, tv in TORCHVISION_SETS.items():
        table.add_row(f"  torchvision:{name}", tv.summary, "yes")
    out.print(table)


def main() -> None:
    app(prog_name="decnn")


if __name__ == "__main__":
    sys.exit(main())
