"""Spoken digits (AudioMNIST, FSDD) and spoken commands (Fluent Speech Commands) as 32x32 log-mel spectrograms.

Every clip goes through one fixed pipeline (``log_mel``):

1. mono: the mean over channels;
2. resampled to 16 kHz with ``torchaudio.functional.resample`` (windowed-sinc interpolation);
3. exactly 1 s (16,000 samples), centred: shorter clips are zero-padded equally on both sides, longer ones
   keep their middle second (AudioMNIST digits, all under 1 s, sit whole in the middle of the window;
   Fluent commands, 2-4 s long, lose their beginning and end; FSDD's trimmed digits, 0.14-2.3 s, are under
   1 s but for 4 of the 2,000 in the 4-speaker copy);
4. ``torchaudio.transforms.MelSpectrogram``: n_fft 1024 (64 ms), Hann window of 1024 samples, hop 516
   samples (32 ms), centred frames (reflect padding), power 2, 32 HTK mel bands over 0 Hz to ``f_max`` (the
   mel range, below), which gives 1 + 16000 // 516 = 32 frames;
5. decibels relative to a fixed reference, the power of a full-scale (amplitude 1) sine in its peak bin,
   ``(sum of window / 2) ** 2``; so 0 dB is a full-scale tone whatever the clip;
6. the range [-80 dB, 0 dB] mapped linearly onto [0, 1] and clipped: a (1, 32, 32) image in [0, 1] (mels by
   frames, low frequencies at row 0). The scaling is the same for every clip (no per-clip normalisation),
   so loudness differences between recordings are kept and an input means the same level in every clip.

The mel range's upper edge ``f_max`` is fixed per dataset by one rule: the Nyquist frequency of the lowest
sample rate among the dataset's recordings, at most 8 kHz (the Nyquist frequency of the 16 kHz the clips are
resampled to). Resampling cannot add content above a recording's own Nyquist frequency, so a wider range would
leave the top mel rows empty (about -80 dB, i.e. 0) in every clip of that rate; with this rule every row carries
signal. On FSDD's 1,620 training clips (8 kHz), over 0-8 kHz the top 5 of the 32 rows average 0.001-0.003 over
clips and frames; over 0-4 kHz every row averages 0.06 (row 0) or more. FSDD gets 0-4 kHz: its loader reads
the rate of every recording (from the WAV headers, before ``--subset``) and reports the rates and the range in
its split notes. AudioMNIST (48 kHz) and Fluent (16 kHz) are published at 16 kHz or more, where the rule gives
8 kHz, so their range is the fixed 0-8 kHz it has always been (their rates are not scanned). Spectrograms of
datasets with different ranges have different frequency axes: an FSDD row is not the same band as an
AudioMNIST row.

WAV files are read with ``scipy.io.wavfile``: in torchaudio 2.9, ``torchaudio.load`` needs the separate
TorchCodec package, which this environment lacks. Integer PCM (8, 16, 24 and 32 bit) is scaled to [-1, 1];
float WAVs are taken as they are.

Spectrograms are small, so every dataset is held in memory as ``TensorDataset(x (N, 1, 32, 32), y (N,))``.
Computing them for tens of thousands of clips takes minutes, so they are cached per dataset in
``decnn_logmel_cache.pt`` next to the data (keyed by the pipeline version, which includes the mel range, and,
per file, its relative path and size; written atomically; skipped when the folder is read-only, by its
permissions or its file system). Only the WAVs of the examples kept after ``--subset`` are decoded.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections import Counter
from collections.abc import Iterable, Sequence
from functools import cache
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch
import torchaudio
import torchaudio.functional as AF
from rich.console import Console
from rich.progress import track
from scipy.io import wavfile
from sklearn.model_selection import train_test_split
from torch.utils.data import TensorDataset

from decnn_cli.config import DataConfig
from decnn_cli.data.roots import resolve_root
from decnn_cli.data.spec import DataSpec, Splits, channel_stats
from decnn_cli.data.splitting import cap
from decnn_cli.errors import DecnnError

SAMPLE_RATE = 16_000
CLIP_SAMPLES = SAMPLE_RATE  # 1 s
N_FFT = 1024
HOP = 516
N_MELS = 32
N_FRAMES = 1 + CLIP_SAMPLES // HOP
DB_FLOOR = -80.0  # maps to 0; 0 dB (a full-scale sine) maps to 1
REF_POWER = float(torch.hann_window(N_FFT).sum() / 2) ** 2
F_MAX = SAMPLE_RATE / 2  # the widest mel range's upper edge, Hz; AudioMNIST's and Fluent's
PIPELINE_VERSION = f"logmel-v2-sr{SAMPLE_RATE}-len{CLIP_SAMPLES}-fft{N_FFT}-hop{HOP}-mels{N_MELS}-db{DB_FLOOR:g}"
# The key of caches written before the mel range was per dataset; all of them hold 0-8 kHz spectrograms.
PIPELINE_VERSION_0_8KHZ = f"logmel-v1-sr{SAMPLE_RATE}-len{CLIP_SAMPLES}-fft{N_FFT}-hop{HOP}-mels{N_MELS}-db{DB_FLOOR:g}"
CACHE_NAME = "decnn_logmel_cache.pt"
SHOW_PROGRESS_FROM = 200  # clips to compute before a progress bar is worth showing

AUDIOMNIST_LAYOUT = "AudioMNIST/data/<speaker>/<digit>_<speaker>_<index>.wav"
AUDIOMNIST_NAME = re.compile(r"^(\d)_(.+)_(\d+)\.wav$", re.IGNORECASE)  # speaker: numbers or words
AUDIOMNIST_TEST_SHARE = 0.2
FLUENT_FOLDER = "fluent_speech_commands_dataset"
FLUENT_LAYOUT = f"{FLUENT_FOLDER}/data/{{train,valid,test}}_data.csv and the wavs/ they list"
FLUENT_SPLITS = ("train", "valid", "test")
FLUENT_COLUMNS = ("path", "speakerId", "transcription", "action", "object", "location")
ACTIONS = ("activate", "bring", "change language", "deactivate", "decrease", "increase")
FSDD_FOLDER = "fsdd"
FSDD_LAYOUT = f"{FSDD_FOLDER}/recordings/<digit>_<speaker>_<index>.wav"
FSDD_NAME = re.compile(r"^(\d)_(.+)_(\d+)\.wav$", re.IGNORECASE)  # e.g. 7_jackson_32.wav
FSDD_TEST_INDICES = range(5)  # FSDD's own convention: recordings 0-4 of every digit and speaker are the test set


def pipeline_version(f_max: float = F_MAX) -> str:
    """The cache key of spectrograms over the mel range 0 Hz to ``f_max`` Hz."""
    return f"{PIPELINE_VERSION}-mel0-{f_max:g}Hz"


def mel_f_max(sample_rates: Iterable[int]) -> float:
    """The mel range's upper edge (Hz) for a dataset whose recordings have ``sample_rates``: the Nyquist
    frequency of the lowest rate, at most ``F_MAX`` (the Nyquist frequency of the resampled clips)."""
    rates = list(sample_rates)
    if not rates:
        return F_MAX
    return min(F_MAX, min(rates) / 2)


@cache
def _mel(f_max: float = F_MAX) -> torchaudio.transforms.MelSpectrogram:
    if not 0 < f_max <= F_MAX:
        raise DecnnError(f"the mel range's upper edge must be in (0, {F_MAX:g}] Hz, not {f_max:g}")
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=N_FFT, hop_length=HOP, n_mels=N_MELS, f_max=f_max, power=2.0
    )


def fix_length(waveform: torch.Tensor, length: int = CLIP_SAMPLES) -> torch.Tensor:
    """The centred ``length`` samples of (..., T): zero-padded equally on both sides, or its middle cut out."""
    excess = waveform.shape[-1] - length
    if excess >= 0:
        start = excess // 2
        return waveform[..., start : start + length]
    left = -excess // 2
    return torch.nn.functional.pad(waveform, (left, -excess - left))


def log_mel(waveform: torch.Tensor, sample_rate: int, f_max: float = F_MAX) -> torch.Tensor:
    """The (1, 32, 32) log-mel image in [0, 1] (mels by frames) of a clip of any length and rate.

    ``waveform`` is (T,) or (channels, T), float in [-1, 1] (integer PCM samples are scaled into that range:
    signed by 2 ** (bits - 1), uint8 around 128); ``sample_rate`` is in Hz; the 32 mel bands span 0 Hz to
    ``f_max`` Hz. See the module docstring for the steps.
    """
    if waveform.ndim == 1:
        waveform = waveform.unsqueeze(0)
    if waveform.ndim != 2:
        raise DecnnError(f"a waveform must be (samples,) or (channels, samples), not {tuple(waveform.shape)}")
    if sample_rate <= 0:
        raise DecnnError(f"sample rate {sample_rate} is not positive; pass the clip's rate in Hz")
    if waveform.dtype == torch.uint8:
        waveform = (waveform.double() - 128.0) / 128.0
    elif not waveform.is_floating_point():
        waveform = waveform.double() / -torch.iinfo(waveform.dtype).min
    mono = waveform.float().mean(dim=0)
    if mono.numel() and sample_rate != SAMPLE_RATE:
        mono = AF.resample(mono, int(sample_rate), SAMPLE_RATE)
    mono = torch.nan_to_num(fix_length(mono), nan=0.0, posinf=0.0, neginf=0.0)
    power = _mel(float(f_max))(mono)
    db = 10.0 * torch.log10(power.clamp_min(1e-10) / REF_POWER)
    return ((db - DB_FLOOR) / -DB_FLOOR).clamp(0.0, 1.0).unsqueeze(0)


def read_wav(path: Path) -> tuple[torch.Tensor, int]:
    """A WAV file as (channels, T) floats in [-1, 1] and its sample rate."""
    try:
        rate, data = wavfile.read(path)
    except FileNotFoundError:
        raise DecnnError(f"{path} is missing; put the dataset's WAV file there") from None
    except (ValueError, OSError, EOFError, IndexError) as err:
        raise DecnnError(f"could not read WAV file {path} ({err}); replace it with an intact 16-bit PCM WAV") from None
    data = np.asarray(data)
    if data.dtype == np.uint8:
        samples = (data.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(data.dtype, np.integer):
        samples = data.astype(np.float32) / float(-np.iinfo(data.dtype).min)
    else:
        samples = data.astype(np.float32)
    samples = samples.reshape(len(samples), -1).T  # scipy gives (T,) or (T, channels)
    return torch.from_numpy(np.ascontiguousarray(samples)), int(rate)


def wav_rate(path: Path) -> int:
    """The sample rate (Hz) of a WAV file, from its header (the samples are memory-mapped, not read)."""
    try:
        try:
            rate, _ = wavfile.read(path, mmap=True)
        except ValueError:  # formats scipy cannot memory-map (e.g. 24-bit PCM) are read whole
            rate, _ = wavfile.read(path)
    except FileNotFoundError:
        raise DecnnError(f"{path} is missing; put the dataset's WAV file there") from None
    except (ValueError, OSError, EOFError, IndexError) as err:
        raise DecnnError(f"could not read WAV file {path} ({err}); replace it with an intact 16-bit PCM WAV") from None
    return int(rate)


def wav_log_mel(path: Path, f_max: float = F_MAX) -> torch.Tensor:
    """``log_mel`` of one WAV file over the mel range 0 Hz to ``f_max`` Hz: (1, 32, 32) in [0, 1]."""
    return log_mel(*read_wav(path), f_max=f_max)


def _wavs(folder: Path, patterns: Sequence[str]) -> list[Path]:
    """The files matching ``patterns`` (globs without the extension) whose name ends in .wav in any case."""
    found = {path for pattern in patterns for path in folder.glob(pattern)}
    return sorted(path for path in found if path.suffix.lower() == ".wav" and path.is_file())


def _save_atomically(payload: dict, path: Path) -> None:
    from decnn_cli.results import atomic_file

    with atomic_file(path) as handle:
        torch.save(payload, handle)


def _writable(folder: Path) -> bool:
    """Whether ``folder`` may receive the cache: writable for this process and not marked read-only by its
    permissions (which the superuser would otherwise ignore)."""
    return os.access(folder, os.W_OK) and bool(stat.S_IMODE(folder.stat().st_mode) & 0o222)


def _read_cache(path: Path, f_max: float = F_MAX) -> dict[tuple[str, int], torch.Tensor]:
    """(relative path, size) -> spectrogram of the cache at ``path`` for the mel range 0 Hz to ``f_max``;
    empty when absent, stale, of another mel range or unreadable."""
    if not path.is_file():
        return {}
    valid = {pipeline_version(f_max)} | ({PIPELINE_VERSION_0_8KHZ} if f_max == F_MAX else set())
    try:
        payload = torch.load(path, weights_only=True)
        if payload.get("version") not in valid:
            return {}
        return dict(zip(zip(payload["files"], payload["sizes"], strict=True), payload["x"], strict=True))
    except Exception:  # a truncated or foreign file is recomputed, never trusted
        return {}


def spectrograms(folder: Path, files: Sequence[str], what: str, f_max: float = F_MAX) -> torch.Tensor:
    """(N, 1, 32, 32) log-mel images over 0 Hz to ``f_max`` of ``files`` (paths relative to ``folder``),
    through the folder's cache."""
    sizes = []
    for name in files:
        path = folder / name
        if not path.is_file():
            raise DecnnError(f"{what}: {path} is missing; put the WAV file there (or the whole dataset)")
        sizes.append(path.stat().st_size)
    keys = list(zip(files, sizes, strict=True))
    cache_path = folder / CACHE_NAME
    cached = _read_cache(cache_path, f_max)
    missing = [i for i, key in enumerate(keys) if key not in cached]
    if missing:
        steps = track(
            missing,
            description=f"{what}: log-mel spectrograms",
            disable=len(missing) < SHOW_PROGRESS_FROM,
            console=Console(stderr=True),
            transient=True,
        )
        for i in steps:
            cached[keys[i]] = wav_log_mel(folder / files[i], f_max)
        payload = {
            "version": pipeline_version(f_max),
            "files": [name for name, _ in cached],
            "sizes": [size for _, size in cached],
            "x": torch.stack(list(cached.values())),
        }
        if _writable(folder):  # a read-only data folder only costs the recomputation next time
            with contextlib.suppress(OSError):
                _save_atomically(payload, cache_path)
    if not keys:
        return torch.empty(0, 1, N_MELS, N_FRAMES)
    return torch.stack([cached[key] for key in keys])


def _capped_indices(n: int, limit: int | None, seed: int) -> list[int]:
    """The examples ``cap`` keeps of a split of ``n`` (decided before any WAV is read)."""
    (index,) = cap(TensorDataset(torch.arange(n)), limit, seed).tensors
    return index.tolist()


def cap_lists(
    files: dict[str, list[str]], labels: dict[str, list[int]], cfg: DataConfig
) -> tuple[dict[str, list[str]], dict[str, list[int]]]:
    """The train/val/test file lists and labels, each capped at ``cfg.subset`` (seeded; a no-op when applied
    again, since a capped list is within the cap)."""
    kept_files, kept_labels = {}, {}
    for offset, split in enumerate(("train", "val", "test")):
        keep = _capped_indices(len(files[split]), cfg.subset, cfg.split_seed + offset)
        kept_files[split] = [files[split][i] for i in keep]
        kept_labels[split] = [labels[split][i] for i in keep]
    return kept_files, kept_labels


def spectrogram_splits(
    name: str,
    folder: Path,
    files: dict[str, list[str]],
    labels: dict[str, list[int]],
    cfg: DataConfig,
    output_names: tuple[str, ...],
    notes: list[str],
    f_max: float = F_MAX,
) -> Splits:
    """Spectrogram TensorDatasets (mel range 0 Hz to ``f_max``) for the train/val/test file lists, each capped
    at ``cfg.subset``."""
    files, labels = cap_lists(files, labels, cfg)
    data = {}
    for split in ("train", "val", "test"):
        x = spectrograms(folder, files[split], f"{name} {split}", f_max)
        y = torch.tensor(labels[split], dtype=torch.long)
        data[split] = TensorDataset(x, y)
    mean, std = channel_stats(data["train"].tensors[0])
    spec = DataSpec(
        name=name,
        in_shape=(1, N_MELS, N_FRAMES),
        num_outputs=len(output_names),
        task="multiclass",
        output_names=output_names,
        mean=mean,
        std=std,
    )
    return Splits(spec=spec, train=data["train"], val=data["val"], test=data["test"], notes=notes)


# AudioMNIST ---------------------------------------------------------------------------------------------


def audiomnist_files(cfg: DataConfig) -> tuple[Path, list[tuple[str, int, str]]]:
    """The AudioMNIST folder and its clips as (path relative to it, digit, speaker), sorted by path.

    WAVs are looked for in ``AudioMNIST/data/<speaker>/``, ``AudioMNIST/data/`` and ``AudioMNIST/``; the
    digit and the speaker come from the file name ``<digit>_<speaker>_<index>.wav``. A speaker is a number
    (AudioMNIST's own, ``01``-``60``, kept without leading zeros) or any other name (``george``).
    """
    folder = resolve_root(cfg, AUDIOMNIST_LAYOUT) / "AudioMNIST"
    if not folder.is_dir():
        raise DecnnError(f"{folder} is missing; the data root must hold {AUDIOMNIST_LAYOUT}")
    found = _wavs(folder, ("data/*/*", "data/*", "*"))
    if not found:
        raise DecnnError(f"no WAV files under {folder}; put AudioMNIST's recordings there as {AUDIOMNIST_LAYOUT}")
    clips = []
    for path in found:
        match = AUDIOMNIST_NAME.match(path.name)
        if match:
            clips.append((path.relative_to(folder).as_posix(), int(match[1]), _speaker_id(match[2])))
    if not clips:
        raise DecnnError(
            f"none of the {len(found)} WAV files under {folder} (e.g. {found[0].name}) is named "
            f"<digit>_<speaker>_<index>.wav; rename them so (e.g. 7_01_32.wav), as in {AUDIOMNIST_LAYOUT}"
        )
    return folder, clips


def _speaker_id(name: str) -> str:
    """A speaker as the suite names it: AudioMNIST's numbers without leading zeros (``01`` -> ``1``, as
    before speakers could be words, so seeded splits stay the same), other names as they are."""
    return str(int(name)) if name.isascii() and name.isdigit() else name


def split_speakers(
    speakers: Sequence[str], val_fraction: float, seed: int, test_share: float = AUDIOMNIST_TEST_SHARE
) -> tuple[list[str], list[str], list[str]]:
    """Seeded (train, val, test) speaker lists: ``test_share`` of the speakers for test, then
    ``val_fraction`` of the rest for val (each at least one speaker), so no speaker is in two splits."""
    ordered = sorted(set(speakers))
    if len(ordered) < 3:
        raise DecnnError(
            f"AudioMNIST is split by speaker and needs recordings of at least 3 speakers, but its recordings "
            f"are of {len(ordered)} ({', '.join(ordered) or 'none'}); add recordings of more speakers, named "
            f"<digit>_<speaker>_<index>.wav as in {AUDIOMNIST_LAYOUT}"
        )
    order = [ordered[i] for i in torch.randperm(len(ordered), generator=torch.Generator().manual_seed(seed))]
    n_test = min(len(order) - 2, max(1, round(len(order) * test_share)))
    test, rest = order[:n_test], order[n_test:]
    n_val = min(len(rest) - 1, max(1, round(len(rest) * val_fraction)))
    return sorted(rest[n_val:]), sorted(rest[:n_val]), sorted(test)


def load_audiomnist(cfg: DataConfig) -> Splits:
    """AudioMNIST: spoken digits 0-9, split by speaker (20% test, ``val_fraction`` of the rest val)."""
    folder, clips = audiomnist_files(cfg)
    train, val, test = split_speakers([speaker for _, _, speaker in clips], cfg.val_fraction, cfg.split_seed)
    files: dict[str, list[str]] = {}
    labels: dict[str, list[int]] = {}
    for split, speakers in (("train", set(train)), ("val", set(val)), ("test", set(test))):
        members = [(path, digit) for path, digit, speaker in clips if speaker in speakers]
        files[split] = [path for path, _ in members]
        labels[split] = [digit for _, digit in members]
    notes = [f"speakers: train {train}, val {val}, test {test}"]
    return spectrogram_splits("audiomnist", folder, files, labels, cfg, tuple(str(d) for d in range(10)), notes)


# Fluent Speech Commands ---------------------------------------------------------------------------------


def read_fluent_csv(path: Path) -> pd.DataFrame:
    """One of Fluent's split CSVs (unnamed index column, then path, speakerId, ..., action, ...)."""
    if not path.is_file():
        raise DecnnError(f"{path} is missing; the data root must hold {FLUENT_LAYOUT}")
    try:
        frame = pd.read_csv(path, index_col=0, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, ValueError) as err:
        raise DecnnError(f"{path} is malformed ({err}); replace it with the original Fluent CSV") from None
    absent = [column for column in FLUENT_COLUMNS if column not in frame.columns]
    if absent:
        raise DecnnError(
            f"{path} is malformed: it lacks the column(s) {absent}; replace it with the original Fluent CSV "
            f"(header ',{','.join(FLUENT_COLUMNS)}')"
        )
    if frame.empty:
        raise DecnnError(f"{path} lists no recordings; replace it with the original Fluent CSV")
    unknown = sorted(set(frame["action"]) - set(ACTIONS))
    if unknown:
        raise DecnnError(
            f"{path} is malformed: action(s) {unknown[:5]} are not among {list(ACTIONS)}; "
            "replace it with the original Fluent CSV"
        )
    if (frame["path"].str.strip() == "").any():
        raise DecnnError(f"{path} is malformed: some rows have an empty path; replace it with the original Fluent CSV")
    return frame


def load_fluent(cfg: DataConfig) -> Splits:
    """Fluent Speech Commands: the 6 actions, on the official train/valid/test splits."""
    folder = resolve_root(cfg, FLUENT_LAYOUT) / FLUENT_FOLDER
    if not folder.is_dir():
        raise DecnnError(f"{folder} is missing; the data root must hold {FLUENT_LAYOUT}")
    files: dict[str, list[str]] = {}
    labels: dict[str, list[int]] = {}
    for split, official in zip(("train", "val", "test"), FLUENT_SPLITS, strict=True):
        frame = read_fluent_csv(folder / "data" / f"{official}_data.csv")
        files[split] = frame["path"].str.strip().tolist()
        labels[split] = [ACTIONS.index(action) for action in frame["action"]]
    listed = [name for split in files.values() for name in split]
    if not any((folder / name).is_file() for name in listed[:: max(1, len(listed) // 100)]):
        raise DecnnError(
            f"none of the WAVs the Fluent CSVs list are under {folder} (e.g. {folder / listed[0]}); "
            f"put the dataset's wavs/ folder there"
        )
    notes = ["Fluent's official valid split is the validation set (val_fraction is not used)"]
    return spectrogram_splits("fluent", folder, files, labels, cfg, ACTIONS, notes)


# Free Spoken Digit Dataset ------------------------------------------------------------------------------


class FsddClip(NamedTuple):
    """One FSDD recording: its path relative to the ``fsdd`` folder and what its name says."""

    path: str
    digit: int
    speaker: str
    index: int


def fsdd_files(cfg: DataConfig) -> tuple[Path, list[FsddClip], list[str]]:
    """The ``fsdd`` folder, its recordings (sorted by path) and the names of the WAVs it ignored.

    Recordings are ``fsdd/recordings/<digit>_<speaker>_<index>.wav`` as FSDD names them (``7_jackson_32.wav``:
    speakers are words, the index counts a speaker's takes of a digit from 0).
    """
    folder = resolve_root(cfg, FSDD_LAYOUT) / FSDD_FOLDER
    recordings = folder / "recordings"
    if not recordings.is_dir():
        raise DecnnError(f"{recordings} is missing; the data root must hold {FSDD_LAYOUT}")
    found = _wavs(recordings, ("*",))
    if not found:
        raise DecnnError(f"no WAV files in {recordings}; put FSDD's recordings there as {FSDD_LAYOUT}")
    clips, ignored = [], []
    for path in found:
        match = FSDD_NAME.match(path.name)
        if match:
            clips.append(FsddClip(f"recordings/{path.name}", int(match[1]), match[2], int(match[3])))
        else:
            ignored.append(path.name)
    if not clips:
        raise DecnnError(
            f"none of the {len(found)} WAV files in {recordings} (e.g. {found[0].name}) is named "
            f"<digit>_<speaker>_<index>.wav; the data root must hold {FSDD_LAYOUT}, as FSDD names them "
            "(e.g. 7_jackson_32.wav)"
        )
    return folder, clips, ignored


def split_fsdd(clips: Sequence[FsddClip], val_fraction: float, seed: int) -> dict[str, list[FsddClip]]:
    """FSDD's own split: recordings with index 0-4 are test; ``val_fraction`` of the others (seeded) are
    validation, stratified by digit and speaker so every pair keeps its share; the rest are train."""
    test = [clip for clip in clips if clip.index in FSDD_TEST_INDICES]
    rest = [clip for clip in clips if clip.index not in FSDD_TEST_INDICES]
    if not test or not rest:
        which = "none has" if not test else "all have"
        raise DecnnError(
            f"FSDD's test set is the recordings with index 0-4 of every digit and speaker, but {which} such an "
            f"index among the {len(clips)} found; put the dataset's whole recordings/ folder there ({FSDD_LAYOUT})"
        )
    pairs = Counter((clip.digit, clip.speaker) for clip in rest)
    (digit, speaker), fewest = min(pairs.items(), key=lambda item: (item[1], item[0]))
    if fewest < 2:
        raise DecnnError(
            f"FSDD's validation set is stratified by digit and speaker, but {speaker} has only one recording of "
            f"digit {digit} outside the test indices 0-4; add the dataset's other recordings ({FSDD_LAYOUT})"
        )
    n_val = int(np.ceil(val_fraction * len(rest)))  # as scikit-learn rounds a fractional test_size
    if not len(pairs) <= n_val <= len(rest) - len(pairs):
        raise DecnnError(
            f"data.val_fraction {val_fraction:g} gives {n_val} of FSDD's {len(rest)} non-test recordings to "
            f"validation, but validation and train each need at least one recording of each of the {len(pairs)} "
            f"digit-speaker pairs; set data.val_fraction between {len(pairs) / len(rest):.3f} and "
            f"{1 - len(pairs) / len(rest):.3f}"
        )
    train, val = train_test_split(
        rest, test_size=n_val, random_state=seed, stratify=[f"{c.digit}/{c.speaker}" for c in rest]
    )
    for name, members in (("train", train), ("validation", val)):
        absent = sorted({c.digit for c in rest} - {c.digit for c in members}) + sorted(
            {c.speaker for c in rest} - {c.speaker for c in members}
        )
        if absent:  # possible only when some pairs have far fewer recordings than others
            raise DecnnError(
                f"FSDD's {name} set drew no recording of {absent}, so uneven are the recordings per digit and "
                f"speaker; add the dataset's missing recordings ({FSDD_LAYOUT}) or change data.val_fraction"
            )
    return {"train": sorted(train), "val": sorted(val), "test": test}


def _fsdd_notes(
    splits: dict[str, list[FsddClip]], rates: Counter[int], f_max: float, cfg: DataConfig, ignored: list[str]
) -> list[str]:
    """What the FSDD split holds, for the console and the run folder."""
    speakers = sorted({clip.speaker for clip in splits["train"] + splits["val"] + splits["test"]})
    per_speaker = ", ".join(
        f"{s} {'/'.join(str(sum(c.speaker == s for c in splits[k])) for k in ('train', 'val', 'test'))}"
        for s in speakers
    )
    notes = [
        f"split: FSDD's own, recordings with index 0-4 of every digit and speaker are test; "
        f"{cfg.val_fraction:g} of the others are validation, stratified by digit and speaker "
        f"(data.split_seed {cfg.split_seed})",
        f"speakers ({len(speakers)}): {', '.join(speakers)}",
        f"recordings: train {len(splits['train'])}, val {len(splits['val'])}, test {len(splits['test'])}"
        + (f" (data.subset {cfg.subset})" if cfg.subset is not None else ""),
        f"per speaker (train/val/test): {per_speaker}",
        "sample rates found: " + ", ".join(f"{rate} Hz ({n} recordings)" for rate, n in sorted(rates.items())),
        f"mel range: 0-{f_max:g} Hz, the Nyquist frequency of the lowest sample rate found (at most {F_MAX:g} Hz)",
    ]
    if ignored:
        notes.append(f"ignored {len(ignored)} WAV file(s) not named <digit>_<speaker>_<index>.wav, e.g. {ignored[0]}")
    return notes


def load_fsdd(cfg: DataConfig) -> Splits:
    """Free Spoken Digit Dataset: digits 0-9 on FSDD's own split (index 0-4 test), mel range 0 Hz to the
    Nyquist frequency of its lowest sample rate (4 kHz for FSDD's 8 kHz recordings)."""
    folder, clips, ignored = fsdd_files(cfg)
    rates = Counter(wav_rate(folder / clip.path) for clip in clips)
    f_max = mel_f_max(rates)
    chosen = split_fsdd(clips, cfg.val_fraction, cfg.split_seed)
    by_path = {clip.path: clip for clip in clips}
    files = {split: [clip.path for clip in members] for split, members in chosen.items()}
    labels = {split: [clip.digit for clip in members] for split, members in chosen.items()}
    files, labels = cap_lists(files, labels, cfg)
    used = {split: [by_path[path] for path in paths] for split, paths in files.items()}
    notes = _fsdd_notes(used, rates, f_max, cfg, ignored)
    return spectrogram_splits("fsdd", folder, files, labels, cfg, tuple(str(d) for d in range(10)), notes, f_max)
