"""decnn reproduce: planning, resuming, paper comparison and recipe validation."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from decnn_cli.cli import app
from decnn_cli.errors import ConfigError
from decnn_cli.experiments.reproduce import compare_with_paper, load_recipe, plan, reproduce, staging_name
from decnn_cli.experiments.reproduce.planning import runs_for
from decnn_cli.paper import PAPER

RECIPES = Path(__file__).resolve().parent.parent / "recipes"

MINI = """
[table]
name = "mini"
title = "mini"
size = "smoke"
paper = ["1a"]

[data]
subset = 60
[model]
depth = 2
width = 16
decoder_width = 32
[method]
recursion_depth = 2
[train]
epochs = 1
[eval]
samples = 3

[[grid]]
datasets = ["digits"]
methods = ["standard", "redecnn"]
seeds = [0, 1]

[[evaluations]]
kind = "calibration"
"""


@pytest.fixture
def mini(tmp_path: Path) -> Path:
    path = tmp_path / "mini.toml"
    path.write_text(MINI)
    return path


def test_plan_names_runs_by_what_determines_them(mini: Path, tmp_path: Path):
    runs = plan(load_recipe(mini), out_dir=tmp_path / "runs")
    assert len(runs) == 4
    names = [r.folder.name for r in runs]
    assert len(set(names)) == 4 and names[0].startswith("digits__standard__")
    # The same config maps to the same folder whatever the data root (machine-specific keys are not hashed).
    again = plan(load_recipe(mini), data_root=tmp_path / "elsewhere", out_dir=tmp_path / "runs")
    assert [r.folder for r in again] == [r.folder for r in runs]
    changed = plan(load_recipe(mini), out_dir=tmp_path / "runs", overrides=["train.epochs=2"])
    assert changed[0].folder != runs[0].folder


def test_a_partial_table_names_each_missing_run_with_its_variant(tmp_path: Path):
    from decnn_cli.experiments.reproduce.comparison import comparison_markdown
    from decnn_cli.experiments.reproduce.planning import PlannedRun

    recipe = load_recipe(RECIPES / "table3" / "cpu.toml")
    missing = [
        PlannedRun("holdout", "celeba", "redecnn", label, 0, None, tmp_path, True, show_variant=False)
        for label in ("Wearing_Hat", "Bald")
    ]
    text = comparison_markdown(recipe, pd.DataFrame(columns=["kind", "metric"]), missing)
    assert "recipe: celeba redecnn (Wearing_Hat) seed 0, celeba redecnn (Bald) seed 0." in text


def test_resume_skips_finished_runs_and_redoes_interrupted_ones(mini: Path, tmp_path: Path, runner):
    out, results = tmp_path / "runs", tmp_path / "results"
    args = ["reproduce", str(mini), "--out", str(out), "--results", str(results), "-q"]
    assert runner.invoke(app, args).exit_code == 0
    runs = plan(load_recipe(mini), out_dir=out)
    assert all(r.done for r in runs)
    stamps = {r.folder: (r.folder / "metrics.json").stat().st_mtime_ns for r in runs}
    # Interrupt one run: its folder loses metrics.json and its evaluation rows are gone (and a stray partial folder
    # is left behind).
    victim = runs[1].folder
    (victim / "metrics.json").unlink()
    staged = results / "evaluations" / "calibration.csv"
    rows = pd.read_csv(staged)
    rows[rows["run"] != victim.name].to_csv(staged, index=False)
    (out / f".partial-{runs[2].folder.name}").mkdir()
    dry = runner.invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0 and "4 runs, 1 to train" in dry.output
    # --partial trains nothing and makes the tables from the three finished runs, naming the missing one.
    assert runner.invoke(app, [*args, "--partial"]).exit_code == 0
    assert not (victim / "metrics.json").exists()
    partial = pd.read_csv(results / "mini.csv")
    accuracy = partial[(partial["dataset"] == "digits") & (partial["metric"] == "accuracy")]
    assert dict(zip(accuracy["model"], accuracy["runs"], strict=True)) == {"standard": 1, "redecnn": 2}
    note = "**Partial table**: without these unfinished runs of the recipe: digits standard seed 1.\n"
    assert note in (results / "mini.md").read_text()
    assert runner.invoke(app, args).exit_code == 0
    assert "Partial table" not in (results / "mini.md").read_text()
    for run in runs:
        if run.folder == victim:
            assert (run.folder / "metrics.json").is_file()
        else:
            assert (run.folder / "metrics.json").stat().st_mtime_ns == stamps[run.folder]
    frame = pd.read_csv(results / "mini.csv")
    measured = frame[(frame["dataset"] == "digits") & (frame["metric"] == "accuracy")]
    assert set(measured["model"]) == {"standard", "redecnn"} and (measured["runs"] == 2).all()
    # A run whose folder is gone (trained on another machine, or removed) but whose rows are recorded is still
    # tabled by --partial, and not named as missing.
    shutil.rmtree(runs[3].folder)
    assert runner.invoke(app, [*args, "--partial"]).exit_code == 0
    assert "Partial table" not in (results / "mini.md").read_text()
    frame = pd.read_csv(results / "mini.csv")
    measured = frame[(frame["dataset"] == "digits") & (frame["metric"] == "accuracy")]
    assert (measured["runs"] == 2).all() and not runs[3].folder.exists()


def test_paper_column_matches_the_recipes_tables():
    rows = [
        {"kind": "calibration", "dataset": "mnist", "model": "standard", "outlier": "", "run": "a", "accuracy": 97.0},
        {"kind": "calibration", "dataset": "mnist", "model": "standard", "outlier": "", "run": "b", "accuracy": 98.0},
    ]
    frame = compare_with_paper(rows, PAPER["1a"])
    cell = frame[(frame["dataset"] == "mnist") & (frame["model"] == "standard")].iloc[0]
    assert cell["paper"] == 97.1 and cell["measured"] == 97.5 and cell["difference"] == pytest.approx(0.4)
    assert cell["paper_table"] == "1a" and cell["runs"] == 2
    assert len(frame) == len(PAPER["1a"])  # every paper value appears once, measured or not
    assert frame[frame["model"] == "ensemble"]["runs"].eq(0).all()


def test_a_stand_in_dataset_is_compared_with_the_paper_dataset_it_replaces():
    rows = [{"kind": "calibration", "dataset": "fsdd", "model": "redecnn", "outlier": "", "run": "a", "accuracy": 95.0}]
    frame = compare_with_paper(rows, PAPER["9"], {"fsdd": "audiomnist"})
    cell = frame[(frame["kind"] == "calibration") & (frame["metric"] == "accuracy") & (frame["model"] == "redecnn")]
    cell = cell[cell["dataset"] == "fsdd"].iloc[0]
    assert cell["paper"] == 93.4 and cell["difference"] == pytest.approx(1.6) and cell["paper_dataset"] == "audiomnist"
    assert "audiomnist" not in set(frame["dataset"]), "AudioMNIST's numbers sit in FSDD's column"
    assert "fluent" in set(frame["dataset"]), "datasets without a stand-in keep their paper values"


def test_recipe_without_paper_tables_reports_its_headline_metrics():
    rows = [
        {"kind": "calibration", "dataset": "mnist", "model": "decnn", "outlier": "", "accuracy": 99.0, "ece": 0.5},
        {"kind": "ood", "dataset": "mnist", "model": "decnn", "outlier": "fashion", "auroc_vote_entropy": 0.5},
    ]
    frame = compare_with_paper(rows, [])
    assert set(zip(frame["kind"], frame["metric"], strict=True)) == {
        ("calibration", "accuracy"),
        ("calibration", "ece"),
        ("ood", "auroc_vote_entropy"),
    }
    assert frame["paper"].isna().all() and (frame["runs"] == 1).all()
    assert compare_with_paper([], []).empty  # nothing measured: an empty table, not a crash


def test_recipe_with_unknown_key_is_a_clear_error(tmp_path: Path, runner):
    bad = tmp_path / "bad.toml"
    bad.write_text(MINI.replace("seeds = [0, 1]", "seeds = [0, 1]\nseed = 3"))
    with pytest.raises(ConfigError, match=r"grid\.0\.seed: unknown key"):
        load_recipe(bad)
    result = runner.invoke(app, ["reproduce", str(bad), "--dry-run"])
    assert result.exit_code == 2 and "unknown key" in result.output
    bad.write_text(MINI.replace('paper = ["1a"]', 'paper = ["11"]'))
    with pytest.raises(ConfigError, match="unknown paper table"):
        load_recipe(bad)
    bad.write_text(MINI.replace("depth = 2", "depht = 2"))
    with pytest.raises(ConfigError, match="model.depht"):
        plan(load_recipe(bad))


def test_every_committed_recipe_plans(tmp_path: Path):
    recipes = sorted(RECIPES.glob("*/*.toml"))
    assert len(recipes) >= 2
    for path in recipes:
        runs = plan(load_recipe(path), out_dir=tmp_path)
        assert runs, path


@pytest.mark.slow
def test_smoke_recipe_runs_every_stage_end_to_end(tmp_path: Path):
    comparison = reproduce(
        RECIPES / "smoke" / "cpu.toml", tmp_path / "results", out_dir=tmp_path / "runs", show_progress=False
    )
    measured = comparison[comparison["runs"] > 0]
    assert {"redecnn (Eq. 7: linear)", "redecnn (direct: linear)", "standard"} <= set(measured["model"])
    assert {"calibration", "attack"} <= set(measured["kind"])
    md = (tmp_path / "results" / "smoke.md").read_text()
    assert "paper Table 1a" in md and "97.10" in md


def test_an_evaluation_claimed_by_another_process_is_waited_for_not_redone(mini: Path, tmp_path: Path, monkeypatch):
    from decnn_cli.experiments.reproduce import evaluations, locking

    results = tmp_path / "results"
    reproduce(mini, results, out_dir=tmp_path / "runs", show_progress=False)
    staging = results / "evaluations"
    full = pd.read_csv(staging / "calibration.csv")
    runs = plan(load_recipe(mini), out_dir=tmp_path / "runs")
    theirs, ours = runs[0].folder.name, runs[1].folder.name
    full[~full["run"].isin([theirs, ours])].to_csv(staging / "calibration.csv", index=False)
    held = locking.claim(staging / f"calibration__{theirs}")  # a live process (this one) holds it

    evaluated: list[str] = []
    monkeypatch.setattr(
        evaluations, "run_evaluation", lambda ev, folders, *a: evaluated.extend(f.name for f in folders)
    )

    def other_process_finishes(_seconds: float) -> None:
        merged = pd.concat([pd.read_csv(staging / "calibration.csv"), full[full["run"] == theirs]])
        merged.to_csv(staging / "calibration.csv", index=False)
        held.release()

    monkeypatch.setattr(evaluations.time, "sleep", other_process_finishes)
    evaluation = load_recipe(mini).evaluations[0]
    rows = evaluations.evaluate(evaluation, runs, staging, None, "cpu", None)
    assert evaluated == [ours]  # ours is evaluated here; theirs is waited for, not evaluated twice
    assert theirs in {row["run"] for row in rows}


def _fake_rows(evaluation, folders, outliers, shared) -> None:
    """An evaluation that adds one row per run folder to its table, as the real ones do."""
    from decnn_cli.results import merge_rows

    rows = [{"run": f.name, "dataset": "digits", "accuracy": 90.0} for f in folders]
    path = shared.results_dir / f"{shared.table}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    merge_rows(path, rows, ["run"]).to_csv(path, index=False)


def test_an_evaluation_finished_between_a_look_and_a_claim_is_not_redone(mini: Path, tmp_path: Path, monkeypatch):
    from decnn_cli.experiments.reproduce import evaluations

    runs = plan(load_recipe(mini), out_dir=tmp_path / "runs")
    staging = tmp_path / "results" / "evaluations"
    real_claim = evaluations.claim

    def claim_after_another_process_finished(folder: Path):
        _fake_rows(None, [r.folder for r in runs if folder.name.endswith(r.folder.name)], [], _Shared(staging))
        return real_claim(folder)

    evaluated: list[str] = []
    monkeypatch.setattr(evaluations, "claim", claim_after_another_process_finished)
    monkeypatch.setattr(
        evaluations, "run_evaluation", lambda ev, folders, *a: evaluated.extend(f.name for f in folders)
    )
    rows = evaluations.evaluate(load_recipe(mini).evaluations[0], runs, staging, None, "cpu", None)
    assert evaluated == [] and {row["run"] for row in rows} == {r.folder.name for r in runs}


class _Shared:
    def __init__(self, results_dir: Path, table: str = "calibration"):
        self.results_dir, self.table = results_dir, table


def test_rows_are_merged_into_the_staging_table_under_its_lock(mini: Path, tmp_path: Path, monkeypatch):
    import threading
    import time

    from decnn_cli.experiments.reproduce import evaluations, locking

    runs = plan(load_recipe(mini), out_dir=tmp_path / "runs")
    staging = tmp_path / "results" / "evaluations"
    _fake_rows(None, [runs[0].folder], [], _Shared(staging))
    monkeypatch.setattr(evaluations, "run_evaluation", _fake_rows)
    evaluation = load_recipe(mini).evaluations[0]
    merging = locking.claim(staging / "calibration.csv")  # another process is merging its rows
    worker = threading.Thread(
        target=evaluations._evaluate_one, args=(evaluation, runs[1].folder, [], staging, None, "cpu", None)
    )
    worker.start()
    time.sleep(0.3)
    assert worker.is_alive()  # evaluated (in a folder of its own), now waiting to merge
    _fake_rows(None, [runs[2].folder], [], _Shared(staging))  # the other process's rows land
    merging.release()
    worker.join(10)
    table = pd.read_csv(staging / "calibration.csv")
    assert sorted(table["run"]) == sorted(r.folder.name for r in runs[:3])  # nobody's rows were lost
    assert [p.name for p in staging.iterdir()] == ["calibration.csv"]  # the work folder and the locks are gone


# One published folder per method (Table 1a, MNIST, seed 0), named before each method declared its own settings:
# a refactoring or a new config key must not rename them.
PUBLISHED = {
    "standard": "mnist__standard__5dfb0344__seed0",
    "decnn": "mnist__decnn__ad305ccd__seed0",
    "redecnn": "mnist__redecnn__d40e49de__seed0",
    "dropout": "mnist__dropout__d8af286f__seed0",
    "mc-dropout": "mnist__mc-dropout__9327b43d__seed0",
    "bayesnn": "mnist__bayesnn__c1137fb4__seed0",
    "ensemble": "mnist__ensemble__961d6502__seed0",
}


def test_published_run_folders_keep_their_names():
    # Committed results name their runs; a new config key must not rename them (it is hashed only when set).
    names = {r.folder.name for r in plan(load_recipe(RECIPES / "table5" / "cpu.toml"))}
    assert {"mnist__redecnn__f2053ec1__seed0", "mnist__standard__74a1b8d8__seed0"} <= names
    # Table 1a's runs were published before the warm-ups (ReDecNN's recursive terms, BayesNN's KL) and
    # train.min_steps: at the values that reproduce that training (no warm-up; the recipe's min_steps does not bind
    # on MNIST) they keep their names ...
    before = plan(load_recipe(RECIPES / "table1a" / "cpu.toml"), overrides=["method.warmup=0", "method.kl_warmup=0"])
    before = {r.method: r.folder.name for r in before if r.seed == 0 and r.dataset == "mnist"}
    assert {m: before[m] for m in PUBLISHED} == PUBLISHED
    # ... and the recipe's ReDecNN and BayesNN, which warm up, are new runs; the other methods keep theirs.
    table1a = plan(load_recipe(RECIPES / "table1a" / "cpu.toml"))
    table1a = {r.method: r.folder.name for r in table1a if r.seed == 0 and r.dataset == "mnist"}
    assert {m for m in PUBLISHED if table1a[m] != PUBLISHED[m]} == {"redecnn", "bayesnn"}
    # Set away from its default, the key does rename the runs that read it (those with an Eq. 8 protector) ...
    protected = [r for r in plan(load_recipe(RECIPES / "table8" / "cpu.toml")) if r.stage == "protected"]
    changed = plan(load_recipe(RECIPES / "table8" / "cpu.toml"), overrides=["method.protect_trains_decoder=false"])
    assert not {r.folder.name for r in protected} & {r.folder.name for r in changed}
    # ... and not the runs that ignore it.
    runs = plan(load_recipe(RECIPES / "table5" / "cpu.toml"), overrides=["method.protect_trains_decoder=false"])
    assert "mnist__redecnn__f2053ec1__seed0" in {r.folder.name for r in runs}


def test_min_steps_keys_a_run_folder_only_where_it_raises_the_epochs():
    recipe = load_recipe(RECIPES / "table1a" / "cpu.toml")
    names = {}
    for floor in (0, 4000, 9000):  # MNIST at batch 128: 422 steps per epoch, 8,440 in 20 epochs
        runs = plan(recipe, overrides=[f"train.min_steps={floor}", "method.warmup=0", "method.kl_warmup=0"])
        names[floor] = {r.folder.name for r in runs if r.seed == 0 and r.dataset == "mnist"}
    assert names[4000] == names[0] == set(PUBLISHED.values()), "a floor below 8,440 steps changes nothing"
    assert not names[9000] & names[0], "a floor above it raises the epochs: new runs"


def test_the_detectors_recipe_shares_its_runs_with_tables_1a_and_2():
    detectors = {r.folder.name for r in plan(load_recipe(RECIPES / "detectors" / "cpu.toml"))}
    shared = {r.folder.name for t in ("table1a", "table2") for r in plan(load_recipe(RECIPES / t / "cpu.toml"))}
    assert len(detectors) == 24 and detectors <= shared
    assert {PUBLISHED[m] for m in ("standard", "mc-dropout", "ensemble")} <= detectors
    # The sampled scores are Table 2's rows (nothing is scored twice); the detectors are scored on their own.
    sampled, attacked, detecting = load_recipe(RECIPES / "detectors" / "cpu.toml").evaluations
    table2 = [staging_name(e) for e in load_recipe(RECIPES / "table2" / "cpu.toml").evaluations]
    assert [staging_name(sampled), staging_name(attacked)] == table2[:2]
    assert staging_name(detecting) == "ood_l2000_detectors_only"


def test_the_misclassification_recipe_evaluates_the_runs_of_tables_1a_and_9_at_its_own_n():
    recipe = load_recipe(RECIPES / "misclass" / "cpu.toml")
    runs = {r.folder.name for r in plan(recipe)}
    shared = {r.folder.name for t in ("table1a", "table9") for r in plan(load_recipe(RECIPES / t / "cpu.toml"))}
    assert len(runs) == 24 and runs <= shared
    [evaluation] = recipe.evaluations
    assert staging_name(evaluation) == "calibration_n128"  # not Table 1b's rows (N = 32)


DETECTING = MINI.replace('paper = ["1a"]', 'paper = []\nside_by_side = ["redecnn:vote_entropy", "standard:energy"]')
DETECTING = DETECTING.replace('kind = "calibration"', 'kind = "ood"\ndetectors = ["energy", "recon_error"]')


def test_a_recipe_scores_detectors_beside_sampled_scores_side_by_side(tmp_path: Path):
    images = tmp_path / "my-photos"
    for c in range(2):
        (images / f"c{c}").mkdir(parents=True)
        for i in range(6):
            Image.fromarray(np.full((10, 10, 3), 40 * i, np.uint8)).save(images / f"c{c}" / f"{i}.png")
    recipe = tmp_path / "detecting.toml"
    outliers = f'outliers = {{ "*" = ["folder:{images}", "attack:fgsm@0.3"] }}'
    recipe.write_text(
        DETECTING.replace('detectors = ["energy", "recon_error"]', f'detectors = ["energy", "recon_error"]\n{outliers}')
    )
    results = tmp_path / "results"
    reproduce(recipe, results, out_dir=tmp_path / "runs", show_progress=False)
    staged = pd.read_csv(results / "evaluations" / "ood_d-energy-recon_error.csv")
    assert set(staged["outlier"]) == {"folder:my-photos", "attack:fgsm@0.3"} and len(staged) == 8
    redecnn = staged[staged["method"] == "redecnn"]
    assert redecnn["auroc_recon_error"].between(0, 1).all() and staged["auroc_energy"].between(0, 1).all()
    assert staged[staged["method"] == "standard"]["auroc_recon_error"].isna().all()
    markdown = (results / "mini.md").read_text()
    assert (
        "## Side by side: OOD ROC-AUC" in markdown
        and "| digits vs | redecnn: vote_entropy | standard: energy |" in markdown
    )
    assert "| folder:my-photos |" in markdown
    # Every row is there under the names the recipe's outlier sets give: nothing is evaluated twice.
    stamp = (results / "evaluations" / "ood_d-energy-recon_error.csv").stat().st_mtime_ns
    reproduce(recipe, results, out_dir=tmp_path / "runs", show_progress=False)
    assert (results / "evaluations" / "ood_d-energy-recon_error.csv").stat().st_mtime_ns == stamp


SHARED_SCORES = MINI.replace('paper = ["1a"]', 'paper = []\nside_by_side = ["redecnn:vote_entropy", "standard:energy"]')
SHARED_SCORES = SHARED_SCORES.replace(
    'kind = "calibration"',
    """kind = "ood"
methods = ["redecnn"]
outliers = { "*" = ["patches"] }

[[evaluations]]
kind = "attack"
methods = ["redecnn"]
eps = 0.3

[[evaluations]]
kind = "ood"
methods = ["standard", "redecnn"]
outliers = { "*" = ["patches", "attack:fgsm@0.3"] }
detectors = ["energy", "recon_error"]
sampled = false""",
)


def test_a_detectors_only_evaluation_joins_the_sampled_scores_of_other_evaluations(tmp_path: Path):
    recipe = tmp_path / "shared.toml"
    recipe.write_text(SHARED_SCORES)
    results = tmp_path / "results"
    reproduce(recipe, results, out_dir=tmp_path / "runs", show_progress=False)
    detected = pd.read_csv(results / "evaluations" / "ood_d-energy-recon_error_only.csv")
    assert set(detected["method"]) == {"standard", "redecnn"} and len(detected) == 8
    assert "auroc_vote_entropy" not in detected and "samples" not in detected
    assert detected["auroc_energy"].between(0, 1).all()
    sampled = pd.read_csv(results / "evaluations" / "ood.csv")
    assert set(sampled["method"]) == {"redecnn"} and sampled["auroc_vote_entropy"].between(0, 1).all()
    # The run folder keeps both evaluations' scores of the same set.
    redecnn = next((tmp_path / "runs").glob("digits__redecnn__*__seed0"))
    with np.load(redecnn / "ood_patches.npz") as scores:
        assert {"inlier_vote_entropy", "inlier_energy", "outlier_recon_error"} <= set(scores.files)
    # Side by side, the attack evaluation's FGSM rows and the detectors' attack:fgsm@0.3 rows are one row.
    markdown = (results / "mini.md").read_text()
    fgsm = next(line for line in markdown.splitlines() if line.startswith("| fgsm |"))
    patches = next(line for line in markdown.splitlines() if line.startswith("| patches |"))
    assert "-" not in fgsm.replace("| fgsm |", "") and "-" not in patches.replace("| patches |", "")


def test_a_detectors_only_evaluation_needs_detectors(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text(SHARED_SCORES.replace('detectors = ["energy", "recon_error"]\n', ""))
    with pytest.raises(ConfigError, match="sampled = false"):
        load_recipe(bad)


def test_recipes_name_unknown_detectors_and_outlier_sets(tmp_path: Path):
    bad = tmp_path / "bad.toml"
    bad.write_text(DETECTING.replace('"energy"', '"odin"'))
    with pytest.raises(ConfigError, match="unknown detector 'odin'"):
        load_recipe(bad)
    bad.write_text(DETECTING.replace('detectors = ["energy", "recon_error"]', 'outliers = { "*" = ["svhn"] }'))
    with pytest.raises(ConfigError, match="unknown outlier set 'svhn'"):
        load_recipe(bad)
    bad.write_text(DETECTING.replace('"standard:energy"', '"standard energy"'))
    with pytest.raises(ConfigError, match="model:score"):
        load_recipe(bad)


SEEING = MINI.replace(
    'kind = "calibration"',
    """kind = "ood"
methods = ["redecnn"]
outliers = { digits = ["patches"] }

[[evaluations]]
kind = "ood"
outliers = { celeba = ["mnist"] }

[[evaluations]]
kind = "attack"
datasets = ["mnist"]

[[evaluations]]
kind = "attack"
datasets = ["digits"]""",
)


def test_an_evaluation_sees_only_its_datasets_and_the_runs_it_names_outlier_sets_for(tmp_path: Path):
    recipe = tmp_path / "seeing.toml"
    recipe.write_text(SEEING)
    loaded = load_recipe(recipe)
    runs = plan(loaded)
    digits_ood, faces_ood, mnist_attack, digits_attack = (runs_for(ev, runs) for ev in loaded.evaluations)
    assert {r.method for r in digits_ood} == {"redecnn"} and len(digits_ood) == 2  # seeds 0 and 1
    assert faces_ood == [] and mnist_attack == []  # no outlier set named for digits; no run on MNIST
    assert len(digits_attack) == len(runs) == 4
