from __future__ import annotations

import gzip
from pathlib import Path

import pytest
import torch

from decnn_cli.config import DataConfig
from decnn_cli.data import DATASETS, load_splits
from decnn_cli.data.splitting import make_loader
from decnn_cli.errors import DecnnError
from tests.conftest import REAL_DATA_ROOT, requires_real_data, write_celeba, write_idx, write_mnist_like


def _check_split(ds, shape, n_max=None):
    x, y = ds[0][0], ds[0][1]
    assert tuple(x.shape) == shape
    assert x.dtype == torch.float32
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    if n_max is not None:
        assert len(ds) <= n_max
    return y


def test_registry_lists_the_four_image_datasets():
    assert {"digits", "mnist", "fashion", "celeba"} <= set(DATASETS)


def test_digits_are_28x28_in_unit_range_and_split_disjointly():
    splits = load_splits(DataConfig(name="digits"))
    _check_split(splits.train, (1, 28, 28))
    total = len(splits.train) + len(splits.val) + len(splits.test)
    assert total == 1797
    assert len(splits.test) == 360
    train_x = splits.train.tensors[0].flatten(1)
    test_x = splits.test.tensors[0].flatten(1)
    # No test image appears in train (exact duplicates aside, the split is by index).
    overlap = (torch.cdist(test_x[:50], train_x) == 0).any(1).sum()
    assert overlap < 5
    assert splits.spec.num_outputs == 10 and splits.spec.task == "multiclass"


def test_subset_caps_every_split_and_is_seeded():
    a = load_splits(DataConfig(name="digits", subset=40))
    b = load_splits(DataConfig(name="digits", subset=40))
    for split in ("train", "val", "test"):
        assert len(getattr(a, split)) <= 40
    assert torch.equal(a.train.tensors[1], b.train.tensors[1])
    c = load_splits(DataConfig(name="digits", subset=40, split_seed=1))
    assert not torch.equal(a.train.tensors[1], c.train.tensors[1])


def test_mnist_idx_files_parse(mnist_root: Path):
    splits = load_splits(DataConfig(name="mnist", root=mnist_root))
    assert len(splits.train) + len(splits.val) == 60
    assert len(splits.test) == 20
    y = _check_split(splits.test, (1, 28, 28))
    assert 0 <= int(y) < 10
    # The planted bright square survives parsing: pixel values 255 -> 1.0.
    assert float(splits.test.tensors[0].max()) == 1.0
    fashion = load_splits(DataConfig(name="fashion", root=mnist_root))
    assert fashion.spec.output_names[0] == "T-shirt/top"


def test_mnist_without_root_says_how_to_point_at_one():
    with pytest.raises(DecnnError, match="--data-root"):
        load_splits(DataConfig(name="mnist"))


def test_mnist_with_missing_files_says_where_to_put_them(tmp_path: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DecnnError, match=r"MNIST files are missing under .*MNIST/raw"):
        load_splits(DataConfig(name="mnist", root=tmp_path / "empty"))


def test_mnist_root_that_does_not_exist(tmp_path: Path):
    with pytest.raises(DecnnError, match="does not exist"):
        load_splits(DataConfig(name="mnist", root=tmp_path / "nowhere"))


def test_corrupt_idx_file_is_a_clear_error(mnist_root: Path):
    raw = mnist_root / "MNIST" / "raw"
    (raw / "train-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03garbage")
    with pytest.raises(DecnnError, match="corrupt"):
        load_splits(DataConfig(name="mnist", root=mnist_root))


def test_truncated_idx_file_is_a_clear_error(mnist_root: Path):
    raw = mnist_root / "MNIST" / "raw"
    data = (raw / "t10k-images-idx3-ubyte").read_bytes()
    (raw / "t10k-images-idx3-ubyte").write_bytes(data[: len(data) // 2])
    with pytest.raises(DecnnError, match="corrupt"):
        load_splits(DataConfig(name="mnist", root=mnist_root))


@pytest.mark.parametrize("file", ["train-labels-idx1-ubyte", "t10k-images-idx3-ubyte"])
def test_idx_file_with_a_wrong_magic_number_is_one_sentence_naming_the_file_and_the_fix(mnist_root: Path, file: str):
    path = mnist_root / "MNIST" / "raw" / file
    data = path.read_bytes()
    path.write_bytes(b"\x00\x00\x08\x02" + data[4:])  # a matrix's magic number: the right bytes, the wrong kind
    with pytest.raises(DecnnError) as caught:
        load_splits(DataConfig(name="mnist", root=mnist_root))
    message = str(caught.value)
    kind = "label" if "labels" in file else "image"
    assert message.startswith(f"{path} is not an IDX {kind} file (its magic number is 0x00000802 ")
    assert "re-download with --download" in message and "intact copy" in message
    assert message.replace(str(path), "PATH").count(". ") == 0, "one sentence"


def test_truncated_idx_file_error_names_the_file_and_both_lengths(mnist_root: Path):
    path = mnist_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    with pytest.raises(DecnnError, match="re-download with --download") as caught:
        load_splits(DataConfig(name="mnist", root=mnist_root))
    assert str(caught.value).startswith(f"{path} is corrupt (it holds {len(data) - 3} bytes where its header asks")


def test_mismatched_label_file_is_a_clear_error(mnist_root: Path):
    import numpy as np

    write_idx(mnist_root / "MNIST" / "raw" / "t10k-labels-idx1-ubyte", np.zeros(7))
    with pytest.raises(DecnnError):
        load_splits(DataConfig(name="mnist", root=mnist_root))


def test_celeba_reads_attributes_partition_and_images(celeba_root: Path):
    splits = load_splits(DataConfig(name="celeba", root=celeba_root))
    assert splits.spec.task == "multilabel" and splits.spec.num_outputs == 40
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 6, 6)
    x, y = splits.train[0]
    assert tuple(x.shape) == (3, 64, 64) and 0.0 <= float(x.min()) <= float(x.max()) <= 1.0
    assert y.shape == (40,) and set(y.unique().tolist()) <= {0.0, 1.0}
    loader = make_loader(splits.train, 4, shuffle=True, num_workers=0)
    xb, yb = next(iter(loader))
    assert xb.shape == (4, 3, 64, 64) and yb.shape == (4, 40)


def test_celeba_faces_are_decoded_once_and_read_back_unchanged(celeba_root: Path, monkeypatch: pytest.MonkeyPatch):
    from decnn_cli.data import celeba

    folder = celeba_root / "celeba"
    files = sorted(p.name for p in (folder / "img_align_celeba").glob("*.jpg"))[:4]
    decoded = []
    real_decode = celeba.decode_face
    monkeypatch.setattr(celeba, "decode_face", lambda path: decoded.append(path.name) or real_decode(path))
    faces = celeba.CelebAFaces(folder, files, torch.zeros(len(files), dtype=torch.long), None)
    first = [faces[i][0] for i in range(len(files))]
    again = [faces[i][0] for i in range(len(files))]
    assert decoded == files
    for x, y, name in zip(first, again, files, strict=True):
        assert x.dtype == torch.float32 and x.shape == (3, 64, 64) and x.min() >= 0 and x.max() <= 1
        assert torch.equal(x, y) and torch.equal(x, real_decode(folder / "img_align_celeba" / name).float() / 255)

    monkeypatch.setattr(celeba, "CACHE_LIMIT_BYTES", 0)
    decoded.clear()
    uncached = celeba.CelebAFaces(folder, files, torch.zeros(len(files), dtype=torch.long), None)
    assert all(torch.equal(uncached[i][0], first[i]) for i in (0, 0, 1))
    assert decoded == [files[0], files[0], files[1]]


def test_celeba_single_target_negated_with_protected_groups(celeba_root: Path):
    cfg = DataConfig(name="celeba", root=celeba_root, target="No_Beard", negate_target=True, protected="Bald")
    splits = load_splits(cfg)
    assert splits.spec.task == "multiclass" and splits.spec.num_outputs == 2
    x, y, group = splits.test[0]
    assert int(y) in (0, 1) and int(group) in (0, 1)
    plain = load_splits(DataConfig(name="celeba", root=celeba_root, target="No_Beard"))
    assert all(int(plain.test[i][1]) == 1 - int(splits.test[i][1]) for i in range(len(splits.test)))


def test_celeba_holdout_removes_attribute_from_train_and_val_only(celeba_root: Path):
    splits = load_splits(DataConfig(name="celeba", root=celeba_root, holdout_attr="Wearing_Hat"))
    hat = 35
    assert all(splits.train[i][1][hat] == 0 for i in range(len(splits.train)))
    assert all(splits.val[i][1][hat] == 0 for i in range(len(splits.val)))
    assert any(splits.test[i][1][hat] == 1 for i in range(len(splits.test)))


def test_celeba_holdout_outliers_are_every_image_with_the_attribute_and_none_the_run_saw(celeba_root: Path):
    from decnn_cli.data.outliers import build_outliers

    cfg = DataConfig(name="celeba", root=celeba_root, holdout_attr="Wearing_Hat")
    splits = load_splits(cfg)
    (held_out,) = build_outliers("celeba-holdout:Wearing_Hat", splits.spec, cfg, splits.test, None)
    # The fixture's hats: every third image of 30, so 6 in train, 2 in val and 2 in test.
    hats = [f"{i + 1:06d}.jpg" for i in range(0, 30, 3)]
    assert held_out.outliers.files == hats
    assert not set(held_out.outliers.files) & {*splits.train.files, *splits.val.files}  # never trained on
    assert held_out.inliers.files == [f for f in splits.test.files if f not in hats]
    x, y = held_out.outliers[0]
    assert tuple(x.shape) == (3, 64, 64) and int(y) == -1  # outliers belong to no class
    assert held_out.warning is not None and "only 10 outliers" in held_out.warning
    (capped,) = build_outliers("celeba-holdout:Wearing_Hat", splits.spec, cfg, splits.test, 3)
    assert capped.outliers.files == hats[:3] and len(capped.inliers) == 3
    # A --subset run's test split is a subset of the partition: its inliers are the subset's images.
    small = cfg.model_copy(update={"subset": 4})
    small_splits = load_splits(small)
    (sub,) = build_outliers("celeba-holdout:Wearing_Hat", small_splits.spec, small, small_splits.test, None)
    test_files = [small_splits.test.dataset.files[i] for i in small_splits.test.indices]
    assert sub.inliers.files == [f for f in test_files if f not in hats] and sub.outliers.files == hats


def test_celeba_holdout_outliers_need_a_run_that_held_the_attribute_out(celeba_root: Path):
    from decnn_cli.data.outliers import build_outliers

    cfg = DataConfig(name="celeba", root=celeba_root, holdout_attr="Bald")
    splits = load_splits(cfg)
    with pytest.raises(DecnnError, match="held out 'Bald', not 'Wearing_Hat'"):
        build_outliers("celeba-holdout:Wearing_Hat", splits.spec, cfg, splits.test, None)


def test_celeba_unknown_attribute_lists_valid_ones(celeba_root: Path):
    with pytest.raises(DecnnError, match="not a CelebA attribute.*Wearing_Hat"):
        load_splits(DataConfig(name="celeba", root=celeba_root, target="Wearing_Helmet"))


def test_celeba_missing_partition_file_says_what_to_put_where(celeba_root: Path):
    (celeba_root / "celeba" / "list_eval_partition.txt").unlink()
    with pytest.raises(DecnnError, match="list_eval_partition.txt is missing"):
        load_splits(DataConfig(name="celeba", root=celeba_root))


def test_celeba_bearded_is_not_no_beard(celeba_root: Path):
    bearded = load_splits(DataConfig(name="celeba", root=celeba_root, target="Bearded"))
    negated = load_splits(DataConfig(name="celeba", root=celeba_root, target="No_Beard", negate_target=True))
    assert torch.equal(bearded.test.targets, negated.test.targets)
    assert bearded.spec.output_names == ("no (Bearded)", "yes (Bearded)")
    grouped = load_splits(DataConfig(name="celeba", root=celeba_root, target="Male", protected="Bearded"))
    assert torch.equal(grouped.test.groups, negated.test.targets)


def _person(file: str) -> int:
    return (int(file.removesuffix(".jpg")) - 1) // 3  # the fixture's person of image i is i // 3


@pytest.fixture
def celeba_people(tmp_path: Path) -> Path:
    """60 images of 20 people; 5 of them (15 images) bald."""
    return write_celeba(tmp_path / "data", n=60, bald_people=(0, 4, 8, 12, 16))


def test_celeba_identity_split_keeps_people_apart_and_spreads_the_protected_attribute(celeba_people: Path):
    cfg = DataConfig(name="celeba", root=celeba_people, target="Bearded", protected="Bald", split="identity")
    splits = load_splits(cfg)
    people = [{_person(f) for f in part.files} for part in (splits.train, splits.val, splits.test)]
    assert not (people[0] & people[1] or people[0] & people[2] or people[1] & people[2])
    assert len(people[0] | people[1] | people[2]) == 20 and len(people[2]) == 4  # test: 0.2 of the people
    assert sum(len(part) for part in (splits.train, splits.val, splits.test)) == 60
    # Stratified: a quarter of the people are bald, and so is one of the four test people (three of sixteen
    # elsewhere), not none or all.
    bald = {0, 4, 8, 12, 16}
    assert len(people[2] & bald) == 1 and len(people[0] & bald) >= 2
    assert int(splits.test.groups.sum()) == 3  # the groups follow the images
    (note,) = splits.notes
    assert "stratified on Bald" in note and "test 12 images of 4 people, Bald 3 of 1 people" in note
    again = load_splits(cfg)
    assert again.test.files == splits.test.files
    other = [load_splits(cfg.model_copy(update={"split_seed": seed})).test.files for seed in (1, 2, 3)]
    assert any(files != splits.test.files for files in other)


def test_celeba_identity_split_stays_on_its_attribute_when_the_groups_change(celeba_people: Path):
    bald = DataConfig(name="celeba", root=celeba_people, target="Bearded", protected="Bald", split="identity")
    male = bald.model_copy(update={"protected": "Male", "stratify": "Bald"})
    assert load_splits(male).test.files == load_splits(bald).test.files
    assert load_splits(male).spec.group_names == ("not Male", "Male")


def test_celeba_official_split_counts_the_protected_attribute(tmp_path: Path):
    root = write_celeba(tmp_path / "data", bald_people=(0, 2, 6))  # people 0-5 train, 6-7 val, 8-9 test
    splits = load_splits(DataConfig(name="celeba", root=root, target="Bearded", protected="Bald"))
    (note,) = splits.notes
    assert note == "protected attribute per split: train 18 images, Bald 6; val 6 images, Bald 3; test 6 images, Bald 0"


def test_celeba_identity_split_without_identity_file_says_what_to_put_where(celeba_root: Path):
    (celeba_root / "celeba" / "identity_CelebA.txt").unlink()
    with pytest.raises(DecnnError, match="identity_CelebA.txt"):
        load_splits(DataConfig(name="celeba", root=celeba_root, split="identity"))
    load_splits(DataConfig(name="celeba", root=celeba_root))  # the official partition does not need it


@pytest.mark.realdata
@pytest.mark.skipif(
    not (REAL_DATA_ROOT and (Path(REAL_DATA_ROOT) / "celeba" / "identity_CelebA.txt").is_file()),
    reason="set DECNN_DATA_ROOT to a folder holding the CelebA subset",
)
def test_real_celeba_identity_split_puts_bald_people_in_test():
    cfg = DataConfig(name="celeba", root=Path(REAL_DATA_ROOT), target="Bearded", protected="Bald", split="identity")
    splits = load_splits(cfg)
    from decnn_cli.data.celeba import read_identities

    assert int(splits.test.groups.sum()) > 0  # the official test partition holds none
    person = read_identities(Path(REAL_DATA_ROOT) / "celeba")
    people = [set(person[part.files]) for part in (splits.train, splits.val, splits.test)]
    assert not (people[0] & people[1] or people[0] & people[2] or people[1] & people[2])


def test_celeba_malformed_attribute_file(celeba_root: Path):
    (celeba_root / "celeba" / "list_attr_celeba.txt").write_text("3\nA B\n000001.jpg 1 7\n")
    with pytest.raises(DecnnError, match="list_attr_celeba.txt"):
        load_splits(DataConfig(name="celeba", root=celeba_root))


@requires_real_data
@pytest.mark.parametrize("name", ["mnist", "fashion"])
def test_real_idx_files_load_with_official_sizes(name: str):
    splits = load_splits(DataConfig(name=name, root=Path(REAL_DATA_ROOT)))
    assert len(splits.train) + len(splits.val) == 60000
    assert len(splits.test) == 10000
    assert splits.spec.mean[0] == pytest.approx(0.13 if name == "mnist" else 0.286, abs=0.01)


@requires_real_data
def test_real_mnist_trains_and_fashion_scores_as_more_uncertain(tmp_path: Path):
    from decnn_cli.experiments.ood import OODOptions, evaluate_ood
    from decnn_cli.experiments.train import train
    from decnn_cli.resolve import build_config

    cfg = build_config(
        overrides=[
            "data.name=mnist",
            f"data.root={REAL_DATA_ROOT}",
            "data.subset=3000",
            "method.name=redecnn",
            "train.epochs=6",
            "data.batch_size=64",
            "model.depth=4",
            "method.recursion_depth=4",
            "eval.samples=8",
            f"out_dir={tmp_path}",
        ]
    )
    run = train(cfg, show_progress=False)
    assert run.metrics["test_accuracy"] > 85.0
    options = OODOptions(results_dir=tmp_path / "results", outliers=("fashion",), limit=500, show_progress=False)
    rows = evaluate_ood([run.run_dir], options)
    assert rows[0]["auroc_predictive_entropy"] > 0.6  # clothing is more uncertain than digits


def gzip_only(root: Path, folder: str) -> None:
    """Replace every file of ``root/folder/raw`` by its gzip archive, as the published MNIST files are."""
    raw = root / folder / "raw"
    for path in list(raw.iterdir()):
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()


def test_mnist_and_fashion_load_from_gz_only_folders(tmp_path: Path):
    plain = write_mnist_like(tmp_path / "plain", "MNIST")
    write_mnist_like(plain, "FashionMNIST", seed=1)
    packed = write_mnist_like(tmp_path / "packed", "MNIST")
    write_mnist_like(packed, "FashionMNIST", seed=1)
    for folder in ("MNIST", "FashionMNIST"):
        gzip_only(packed, folder)
    for name in ("mnist", "fashion"):
        want = load_splits(DataConfig(name=name, root=plain))
        got = load_splits(DataConfig(name=name, root=packed))
        for split in ("train", "val", "test"):
            assert torch.equal(want.__dict__[split].tensors[0], got.__dict__[split].tensors[0])
            assert torch.equal(want.__dict__[split].tensors[1], got.__dict__[split].tensors[1])


def test_a_corrupt_gz_file_is_named(tmp_path: Path):
    root = write_mnist_like(tmp_path, "MNIST")
    gzip_only(root, "MNIST")
    (root / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(b"\x00\x00\x08\x03" + bytes(20)))
    with pytest.raises(DecnnError, match="t10k-images-idx3-ubyte.gz is corrupt"):
        load_splits(DataConfig(name="mnist", root=root))


@requires_real_data
def test_real_gz_only_folders_load_with_official_sizes(tmp_path: Path):
    for folder, name in (("MNIST", "mnist"), ("FashionMNIST", "fashion")):
        raw = tmp_path / folder / "raw"
        raw.mkdir(parents=True)
        for path in (Path(REAL_DATA_ROOT) / folder / "raw").glob("*.gz"):
            (raw / path.name).symlink_to(path)
        splits = load_splits(DataConfig(name=name, root=tmp_path))
        assert len(splits.train) + len(splits.val) == 60_000 and len(splits.test) == 10_000
