"""``folder:PATH`` of sound: a tree of WAV files, one subfolder per class, as 32x32 log-mel spectrograms.

Clips go through the named speech datasets' pipeline (``decnn_cli.data.speech.log_mel``): mono, 16 kHz, 1 s
centred, 32 mel bands over 0 Hz to the Nyquist frequency of the lowest sample rate found (at most 8 kHz). A folder
whose name starts with "_" or "." is not a class (Speech Commands' ``_background_noise_``). The split, the first
that applies: ``train/``, ``val/`` and ``test/`` subfolders as given (a missing ``val/`` or ``test/`` split off
``train/``); Speech Commands' ``validation_list.txt`` and ``testing_list.txt`` (paths relative to the folder, one a
line), whose split keeps each speaker in one split; otherwise ``TEST_FRACTION`` and ``data.val_fraction`` of every
class split off, stratified and seeded by ``data.split_seed``, where one speaker's clips may fall in two splits.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import torch

from decnn_cli.config import DataConfig
from decnn_cli.data import sources, speech
from decnn_cli.data.spec import Splits
from decnn_cli.errors import DecnnError

SPEECH_COMMANDS_LISTS = {"val": "validation_list.txt", "test": "testing_list.txt"}


def _is_class(entry: os.DirEntry) -> bool:
    return entry.is_dir() and not entry.name.startswith(("_", ".")) and sources.holds_sound(Path(entry.path))


def _listed(folder: Path, name: str) -> set[str]:
    lines = (folder / name).read_text(encoding="utf-8", errors="replace").splitlines()
    return {line.strip().replace("\\", "/") for line in lines if line.strip()}


def load(cfg: DataConfig, folder: Path) -> Splits:
    """The splits of a ``folder:PATH`` that holds WAV files in class folders (see the module docstring)."""
    from decnn_cli.data.folder import SPLITS, TEST_FRACTION, class_tree, stratified_split

    name = cfg.name
    if cfg.image_size is not None or cfg.channels is not None:
        raise DecnnError(
            f"{name}: {folder} holds sound, whose clips become 1x32x32 log-mel spectrograms; drop data.image_size "
            "and data.channels"
        )
    classes, tree = class_tree(folder, name, sources.SOUND_SUFFIXES, _is_class)
    # paths relative to the folder: the keys of its spectrogram cache and of Speech Commands' lists
    found = {split: [(Path(p).relative_to(folder).as_posix(), c) for p, c in pairs] for split, pairs in tree.items()}
    given = [split for split in SPLITS if (folder / split).is_dir()]
    how = [f"{split}/ as given" for split in given if split != "train"]
    lists = {split: folder / file for split, file in SPEECH_COMMANDS_LISTS.items()}
    if not given and all(path.is_file() for path in lists.values()):
        listed = {split: _listed(folder, path.name) for split, path in lists.items()}
        clips = found.pop("train")
        for split in ("val", "test"):
            found[split] = [clip for clip in clips if clip[0] in listed[split]]
        found["train"] = [clip for clip in clips if clip[0] not in listed["val"] | listed["test"]]
        how.append("val and test as validation_list.txt and testing_list.txt name them (Speech Commands' split)")
    for split, fraction in (("test", TEST_FRACTION), ("val", cfg.val_fraction)):
        if split in found:
            continue
        labels = torch.tensor([label for _, label in found["train"]])
        kept, held = stratified_split(labels, fraction, cfg.split_seed, split, name, classes)
        found[split] = [found["train"][i] for i in held]
        found["train"] = [found["train"][i] for i in kept]
        seed = cfg.split_seed
        how.append(f"{split}: {fraction:g} of each class (stratified, seed {seed}; a speaker may be in two splits)")
    for split in SPLITS:
        if not found[split]:
            raise DecnnError(f"{name}: its {split} split holds no clip; add WAV files to it")
    rates = Counter(speech.wav_rate(folder / path) for clips in found.values() for path, _ in clips)
    f_max = speech.mel_f_max(rates)
    files = {split: [path for path, _ in found[split]] for split in SPLITS}
    labels = {split: [label for _, label in found[split]] for split in SPLITS}
    files, labels = speech.cap_lists(files, labels, cfg)
    shown = ", ".join(classes[:10]) + (", ..." if len(classes) > 10 else "")
    notes = [
        f"{len(classes)} classes ({shown}) from the WAV files in the class folders of {folder}; {'; '.join(how)}; "
        f"{len(files['train'])} / {len(files['val'])} / {len(files['test'])} train / val / test clips"
        + (f" (data.subset {cfg.subset})" if cfg.subset is not None else ""),
        "sample rates found: " + ", ".join(f"{rate} Hz ({n} clips)" for rate, n in sorted(rates.items())),
        f"inputs 1x32x32 log-mel spectrograms, mel range 0-{f_max:g} Hz (the Nyquist frequency of the lowest sample "
        f"rate found, at most {speech.F_MAX:g} Hz)",
    ]
    return speech.spectrogram_splits(name, folder, files, labels, cfg, tuple(classes), notes, f_max)
