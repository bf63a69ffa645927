"""Data of one's own: folder:PATH (image trees and IDX folders), torchvision:NAME, .gz-only MNIST folders, and the one
resolver that checks every name before anything is loaded. Files are written in their real formats (PNG, JPEG, BMP,
IDX, gzip) into temporary folders; the real-data tests build their folders from real MNIST images."""

from __future__ import annotations

import gzip
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from decnn_cli.cli import app
from decnn_cli.data import get_dataset, load_splits
from decnn_cli.data.outliers import build_outliers
from decnn_cli.data.sources import (
    ATTACK_NAMES,
    CORRUPTION_NAMES,
    check_outlier,
    check_outliers,
    dataset_label,
    outlier_rows,
)
from decnn_cli.data.spec import DataSpec
from decnn_cli.errors import ConfigError, DecnnError
from decnn_cli.experiments.train import train
from decnn_cli.resolve import build_config
from tests.conftest import REAL_DATA_ROOT, requires_real_data, write_idx, write_mnist_like
from tests.test_data import gzip_only

TINY = ["train.epochs=1", "model.depth=2", "model.width=16", "model.decoder_width=32", "method.recursion_depth=2"]


def write_tree(
    root: Path, classes: int = 3, per_class: int = 20, size: tuple[int, int] = (20, 24), seed: int = 0
) -> Path:
    """An image-folder tree of RGB PNGs: class c has a bright band at a class-specific height."""
    rng = np.random.default_rng(seed)
    for c in range(classes):
        folder = root / f"class_{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 60, size=(*size, 3)).astype(np.uint8)
            pixels[2 + 5 * c : 6 + 5 * c, 2:-2] = 250
            Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return root


def _cfg(name: str, *overrides: str, method: str = "standard"):
    return build_config(overrides=[f"data.name='{name}'", f"method.name={method}", *overrides])


# --- the resolver ----------------------------------------------------------------------------------------


def test_every_outlier_form_is_checked_and_a_wrong_one_lists_them_all(tmp_path: Path):
    tree = write_tree(tmp_path / "tree", per_class=2)
    for good in ("fashion", "patches", "corrupt:all@2", "corrupt:fog", "celeba-holdout:Bald", "attack:fgsm@0.25"):
        check_outlier(good)
    check_outlier(f"folder:{tree}")
    check_outlier("torchvision:svhn")
    with pytest.raises(DecnnError) as err:
        check_outlier("svhn")
    message = str(err.value)
    assert "did you mean torchvision:SVHN" in message
    for form in (
        "fashion",
        "patches",
        "corrupt:<name>[@severity]",
        "attack:<name>[@eps]",
        "folder:PATH",
        "torchvision:NAME",
    ):
        assert form in message
    for bad, says in (
        ("corrupt:fogg", "unknown corruption"),
        ("corrupt:fog@9", "severity"),
        ("attack:cw", "unknown attack"),
        ("attack:fgsm@x", "not a number"),
        ("torchvision:ImageNet", "unknown torchvision dataset"),
        (f"folder:{tmp_path / 'nowhere'}", "is not a folder"),
    ):
        with pytest.raises(DecnnError, match=says):
            check_outlier(bad)
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(DecnnError, match="holds no image"):
        check_outlier(f"folder:{tmp_path / 'empty'}")


def test_outlier_rows_name_each_set_by_what_it_is(tmp_path: Path):
    assert outlier_rows("corrupt:all")[0] == "corrupt:shot_noise@3" and len(outlier_rows("corrupt:all")) == 15
    assert outlier_rows("attack:fgsm@0.250") == ["attack:fgsm@0.25"]
    assert outlier_rows("attack:pgd") == ["attack:pgd@0.1"]
    assert outlier_rows(f"folder:{tmp_path}/notmnist/") == ["folder:notmnist"]
    assert outlier_rows("torchvision:kmnist") == ["torchvision:KMNIST"]
    one, two = write_tree(tmp_path / "a" / "same", per_class=1), write_tree(tmp_path / "b" / "same", per_class=1)
    with pytest.raises(DecnnError, match="share the table row 'folder:same'"):
        check_outliers([f"folder:{one}", f"folder:{two}"])


def test_the_light_name_lists_agree_with_the_libraries_they_stand_for():
    from decnn_cli.data.corruptions import CORRUPTIONS
    from decnn_cli.experiments.attack import ATTACKS

    assert tuple(CORRUPTIONS) == CORRUPTION_NAMES
    assert tuple(ATTACKS) == ATTACK_NAMES


def test_a_bad_outlier_fails_before_any_run_is_loaded(runner, tmp_path: Path):
    # The run folder does not exist: the outlier name is judged first, and nothing heavy is imported to judge it.
    result = runner.invoke(app, ["eval-ood", str(tmp_path / "no-run"), "-o", "svhn", "-q"])
    assert result.exit_code == 1 and "unknown outlier set 'svhn'" in result.output and "folder:PATH" in result.output
    result = runner.invoke(app, ["eval-ood", str(tmp_path / "no-run"), "-o", "fashion", "-D", "odin", "-q"])
    assert result.exit_code == 1 and "unknown detector 'odin'" in result.output
    code = (
        "import sys; from decnn_cli.data.sources import check_outliers; from decnn_cli.detectors import "
        "parse_detectors; check_outliers(['fashion', 'corrupt:all', 'attack:fgsm@0.2']); parse_detectors(['all']); "
        "print(sorted(m for m in ('torch', 'torchvision', 'numpy', 'pandas', 'sklearn') if m in sys.modules))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_datasets_by_prefix_are_checked_when_the_config_is_built(tmp_path: Path):
    with pytest.raises(ConfigError, match="is not a folder"):
        _cfg(f"folder:{tmp_path / 'nowhere'}")
    with pytest.raises(ConfigError, match="unknown torchvision dataset 'cifar11'.*CIFAR10"):
        _cfg("torchvision:cifar11")
    with pytest.raises(ConfigError, match="folder:PATH"):
        _cfg("imagenet")
    assert _cfg("torchvision:cifar10").data.name == "torchvision:CIFAR10"
    assert get_dataset("torchvision:CIFAR10").reads == {"image_size", "channels"}
    assert dataset_label("folder:/data/my set") == "folder-my-set"


# --- folder:PATH for training --------------------------------------------------------------------------------


def test_an_image_tree_is_split_by_class_and_converted_to_the_configured_shape(tmp_path: Path):
    tree = write_tree(tmp_path / "shapes", classes=3, per_class=20)
    splits = load_splits(_cfg(f"folder:{tree}", "data.image_size=12", "data.channels=1").data)
    assert splits.spec.in_shape == (1, 12, 12) and splits.spec.output_names == ("class_0", "class_1", "class_2")
    assert len(splits.train) + len(splits.val) + len(splits.test) == 60
    x, y = splits.test[0]
    assert x.shape == (1, 12, 12) and x.min() >= 0.0 and x.max() <= 1.0
    test_labels = [int(splits.test[i][1]) for i in range(len(splits.test))]
    assert sorted(np.bincount(test_labels).tolist()) == [4, 4, 4]  # 20% of each class
    assert "stratified" in splits.notes[0] and "1x12x12" in splits.notes[1] and "RGB -> grayscale" in splits.notes[1]
    # Unset, the shape is the first image's; the split is seeded.
    native = load_splits(_cfg(f"folder:{tree}").data)
    assert native.spec.in_shape == (3, 20, 24) and "first training image" in native.notes[1]
    again = load_splits(_cfg(f"folder:{tree}").data)
    assert native.test.files == again.test.files
    other = load_splits(_cfg(f"folder:{tree}", "data.split_seed=1").data)
    assert native.test.files != other.test.files


def test_large_images_default_to_64_on_their_longer_side_unless_a_size_is_set(tmp_path: Path):
    tree = write_tree(tmp_path / "photos", classes=2, per_class=5, size=(218, 178))
    splits = load_splits(_cfg(f"folder:{tree}").data)
    assert splits.spec.in_shape == (3, 64, 52) and "218x178 scaled to 64" in splits.notes[1]
    assert splits.train[0][0].shape == (3, 64, 52)
    kept = load_splits(_cfg(f"folder:{tree}", "data.image_size=[109, 89]").data)
    assert kept.spec.in_shape == (3, 109, 89) and "scaled" not in kept.notes[1]


def test_a_class_too_small_to_split_is_named(tmp_path: Path):
    tree = write_tree(tmp_path / "uneven", classes=2, per_class=10)
    lonely = tree / "lonely"
    lonely.mkdir()
    shutil.copy(tree / "class_0" / "000.png", lonely / "only.png")
    with pytest.raises(DecnnError, match=r"test split: .*'lonely' \(1\) has fewer; add examples to it"):
        load_splits(_cfg(f"folder:{tree}").data)
    shutil.copy(tree / "class_0" / "001.png", lonely / "second.png")  # 2: one to the test split, one left for val
    with pytest.raises(DecnnError, match=r"val split: .*'lonely' \(1\)"):
        load_splits(_cfg(f"folder:{tree}").data)


def test_train_val_test_folders_are_used_as_given(tmp_path: Path):
    root = tmp_path / "given"
    write_tree(root / "train", per_class=10)
    write_tree(root / "test", per_class=3, seed=1)
    (root / "train" / "class_2" / "deeper").mkdir()
    shutil.copy(root / "train" / "class_2" / "000.png", root / "train" / "class_2" / "deeper" / "x.jpg")
    splits = load_splits(_cfg(f"folder:{root}").data)
    assert len(splits.test) == 9 and all("test" in str(f) for f in splits.test.files)
    assert len(splits.train) + len(splits.val) == 31  # any depth within a class folder
    assert "test/ as given" in splits.notes[0] and "val: 0.1 of each class" in splits.notes[0]
    write_tree(root / "val", classes=4, per_class=1, seed=2)
    with pytest.raises(DecnnError, match="classes that train/ lacks \\(class_3\\)"):
        load_splits(_cfg(f"folder:{root}").data)


def test_folder_errors_say_what_to_put_where(tmp_path: Path):
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(flat / "a.png")
    with pytest.raises(DecnnError, match="holds no class subfolders"):
        load_splits(_cfg(f"folder:{flat}").data)
    tree = write_tree(tmp_path / "tree", per_class=5)
    (tree / "class_0" / "009.png").write_bytes(b"not a png")
    cfg = _cfg(f"folder:{tree}")
    splits = load_splits(cfg.data)
    with pytest.raises(DecnnError, match="could not read the image .*009.png"):
        (
            [splits.train[i] for i in range(len(splits.train))]
            + [splits.test[i] for i in range(len(splits.test))]
            + [splits.val[i] for i in range(len(splits.val))]
        )
    one = write_tree(tmp_path / "one", classes=2, per_class=1)
    with pytest.raises(DecnnError, match="cannot split off a test split"):
        load_splits(_cfg(f"folder:{one}").data)


def test_an_idx_folder_trains_with_its_own_labels(tmp_path: Path):
    root = write_mnist_like(tmp_path, "digits-idx", n_train=60, n_test=20)
    raw = root / "digits-idx" / "raw"
    gzip_only(root, "digits-idx")
    splits = load_splits(_cfg(f"folder:{raw}", "data.image_size=14").data)
    assert splits.spec.in_shape == (1, 14, 14) and splits.spec.num_outputs == 10
    assert len(splits.test) == 20 and len(splits.train) + len(splits.val) == 60
    assert sorted(splits.test.tensors[1].tolist()) == sorted((np.arange(20) % 10).tolist())


def test_torchvision_datasets_read_torchvisions_layout_from_the_data_root(tmp_path: Path):
    root = write_mnist_like(tmp_path, "KMNIST", n_train=40, n_test=10)
    splits = load_splits(_cfg("torchvision:kmnist", f"data.root={root}").data)
    assert splits.spec.name == "torchvision:KMNIST" and splits.spec.in_shape == (1, 28, 28)
    assert splits.spec.output_names[0] == "o" and len(splits.test) == 10
    x, y = splits.test[0]
    assert x.shape == (1, 28, 28) and y == 0
    padded = load_splits(_cfg("torchvision:KMNIST", f"data.root={root}", "data.image_size=32", "data.channels=3").data)
    assert padded.test[0][0].shape == (3, 32, 32)
    with pytest.raises(DecnnError, match="torchvision:CIFAR10: the files under .* could not be read"):
        load_splits(_cfg("torchvision:cifar10", f"data.root={root}").data)


def test_decnn_train_on_a_folder_trains_evaluates_and_names_its_run(runner, tmp_path: Path):
    tree = write_tree(tmp_path / "my shapes", per_class=20)
    args = ["train", "--dataset", f"folder:{tree}", "--method", "redecnn", "--out", str(tmp_path / "runs"), "-q"]
    args += [a for s in [*TINY, "data.image_size=16"] for a in ("--set", s)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    run = next((tmp_path / "runs").iterdir())
    assert run.name.startswith("folder-my-shapes__redecnn__seed0__")
    metrics = pd.read_json(run / "metrics.json", typ="series")
    assert any("3x16x16" in note for note in metrics["data_notes"]) and metrics["test_examples"] == 12
    # A folder's size is known once read: its batch follows the rule (43 training images: 32, so 2 steps an epoch).
    assert metrics["batch_size"] == 32 and metrics["steps"] == 2
    assert any("data.batch_size = auto: 43 training examples" in note for note in metrics["data_notes"])
    config = (run / "config.toml").read_text()
    assert "folder:" in config and 'batch_size = "auto"' in config
    out = tmp_path / "results"
    result = runner.invoke(
        app, ["eval-ood", str(run), "-o", "patches", "-o", "corrupt:fog", "--results", str(out), "-q"]
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "ood.csv")
    assert set(frame["outlier"]) == {"patches", "corrupt:fog@3"} and (frame["inliers"] == 12).all()


# --- folder:PATH as outliers ---------------------------------------------------------------------------------


SPEC = DataSpec("toy", (1, 28, 28), 10, "multiclass", tuple("0123456789"), (0.5,), (0.5,))


def test_outlier_folders_give_every_image_at_any_depth_converted_and_described(tmp_path: Path):
    root = tmp_path / "notdigits"
    (root / "a" / "b").mkdir(parents=True)
    rgb = np.full((32, 32, 3), 200, np.uint8)
    Image.fromarray(rgb).save(root / "one.png")
    Image.fromarray(rgb[:, :, 0]).save(root / "a" / "two.bmp")
    Image.fromarray(rgb).save(root / "a" / "b" / "three.jpg")
    Image.fromarray(rgb[:20]).save(root / "a" / "b" / "four.JPEG")
    (root / "a" / "notes.txt").write_text("not an image")
    [oset] = build_outliers(f"folder:{root}", SPEC, build_config().data, None, None)
    x = oset.outliers.tensors[0]
    assert oset.name == "folder:notdigits" and x.shape == (4, 1, 28, 28) and (oset.outliers.tensors[1] == -1).all()
    assert "4 images under" in oset.conversion and "RGB -> grayscale" in oset.conversion
    assert "resized 20x32 -> 28x28" in oset.conversion
    [first] = build_outliers(f"folder:{root}", SPEC, build_config().data, None, 2)
    assert len(first.outliers) == 2
    own = build_config(overrides=[f"data.name='folder:{root}/'"]).data
    with pytest.raises(DecnnError, match="is the run's own dataset"):
        build_outliers(f"folder:{root}", SPEC, own, None, None)


def test_outlier_idx_folders_read_raw_and_gz_images(tmp_path: Path):
    folder = tmp_path / "letters"
    folder.mkdir()
    rng = np.random.default_rng(0)
    write_idx(folder / "t10k-images-idx3-ubyte", rng.integers(0, 255, (5, 28, 28)))
    (folder / "train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(b"\x00\x00\x08\x03" + bytes([0, 0, 0, 7, 0, 0, 0, 16, 0, 0, 0, 16]) + bytes(7 * 256))
    )
    write_idx(folder / "train-labels-idx1-ubyte", np.zeros(7))
    [oset] = build_outliers(f"folder:{folder}", SPEC, build_config().data, None, None)
    assert oset.name == "folder:letters" and len(oset.outliers) == 12
    assert "5 of t10k-images-idx3-ubyte: no conversion needed" in oset.conversion
    assert "7 of train-images-idx3-ubyte.gz: resized 16x16 -> 28x28" in oset.conversion
    [first] = build_outliers(f"folder:{folder}", SPEC, build_config().data, None, 6)
    assert len(first.outliers) == 6 and "1 of train-images" in first.conversion


def test_eval_ood_scores_an_image_folder_and_an_idx_folder_named_by_their_folders(runner, tmp_path: Path):
    data = write_mnist_like(tmp_path / "data", "MNIST", n_train=80, n_test=30)
    cfg = build_config(overrides=["data.name=mnist", f"data.root={data}", f"out_dir={tmp_path / 'runs'}", *TINY])
    run = train(cfg, show_progress=False).run_dir
    idx_folder = write_mnist_like(tmp_path / "other", "Fakes", n_train=10, n_test=25, seed=5) / "Fakes" / "raw"
    images = write_tree(tmp_path / "my-photos", per_class=4, size=(40, 40))
    out = tmp_path / "results"
    args = ["eval-ood", str(run), "-o", f"folder:{idx_folder}", "-o", f"folder:{images}", "--results", str(out), "-q"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out / "ood.csv").set_index("outlier")
    assert set(frame.index) == {"folder:raw", "folder:my-photos"}
    assert frame.loc["folder:raw", "outliers"] == 35 and frame.loc["folder:my-photos", "outliers"] == 12
    assert "resized 40x40 -> 28x28" in frame.loc["folder:my-photos", "conversion"]
    assert "| folder:my-photos |" in (out / "ood.md").read_text()


@requires_real_data
def test_real_mnist_images_in_a_folder_train_and_score_as_outliers(tmp_path: Path):
    # 30 real MNIST test images of each digit, written as PNG files in an image-folder tree.
    source = load_splits(build_config(overrides=["data.name=mnist", f"data.root={REAL_DATA_ROOT}"]).data).test
    x, y = source.tensors
    tree = tmp_path / "mnist-png"
    for digit in range(10):
        (tree / str(digit)).mkdir(parents=True)
        for i, index in enumerate((y == digit).nonzero().squeeze(1)[:30].tolist()):
            Image.fromarray((x[index, 0] * 255).round().byte().numpy()).save(tree / str(digit) / f"{i}.png")
    splits = load_splits(_cfg(f"folder:{tree}").data)
    assert splits.spec.in_shape == (1, 28, 28) and splits.spec.output_names == tuple("0123456789")
    first = splits.test.files[0]
    assert torch.allclose(splits.test[0][0], torch.from_numpy(np.array(Image.open(first))).float()[None] / 255)
    small = ["model.depth=2", "model.width=64", "data.batch_size=16", "train.epochs=8"]
    cfg = build_config(
        overrides=[f"data.name='folder:{tree}'", "method.name=standard", *small, f"out_dir={tmp_path / 'runs'}"]
    )
    outcome = train(cfg, show_progress=False)
    assert outcome.metrics["test_accuracy"] > 50.0  # 10 classes from 216 training images; chance is 10
    fashion = load_splits(build_config(overrides=["data.name=fashion", f"data.root={REAL_DATA_ROOT}"]).data)
    [oset] = build_outliers(f"folder:{tree}", fashion.spec, build_config().data, None, 50)
    assert len(oset.outliers) == 50 and oset.conversion.endswith("no conversion needed")
