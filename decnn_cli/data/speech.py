"""Spoken digits (AudioMNIST) and spoken commands (Fluent Speech Commands) as 32x32 log-mel spectrograms.

Every clip goes through one fixed pipeline (``log_mel``):

1. mono: the mean over channels;
2. resampled to 16 kHz with ``torchaudio.functional.resample`` (windowed-sinc interpolation);
3. exactly 1 s (16,000 samples), centred: shorter clips are zero-padded equally on both sides, longer ones
   keep their middle second (AudioMNIST digits, all under 1 s, sit whole in the middle of the window;
   Fluent commands, 2-4 s long, lose their beginning and end);
4. ``torchaudio.transforms.MelSpectrogram``: n_fft 1024 (64 ms), Hann window of 1024 samples, hop 516
   samples (32 ms), centred frames (reflect padding), power 2, 32 HTK mel bands over 0-8 kHz, which gives
   1 + 16000 // 516 = 32 frames;
5. decibels relative to a fixed reference, the power of a full-scale (amplitude 1) sine in its peak bin,
   ``(sum of window / 2) ** 2``; so 0 dB is a full-scale tone whatever the clip;
6. the range [-80 dB, 0 dB] mapped linearly onto [0, 1] and clipped: a (1, 32, 32) image in [0, 1] (mels by
   frames, low frequencies at row 0). The scaling is the same for every clip (no per-clip normalisation),
   so loudness differences between recordings are kept and an input means the same level in every clip.

WAV files are read with ``scipy.io.wavfile``: in torchaudio 2.9, ``torchaudio.load`` needs the separate
TorchCodec package, which this environment lacks. Integer PCM (8, 16, 24 and 32 bit) is scaled to [-1, 1];
float WAVs are taken as they are.

Spectrograms are small, so both datasets are held in memory as ``TensorDataset(x (N, 1, 32, 32), y (N,))``.
Computing them for tens of thousands of clips takes minutes, so they are cached per dataset in
``decnn_logmel_cache.pt`` next to the data (keyed by the pipeline version and, per file, its relative path
and size; written atomically; skipped when the folder is read-only). Only the WAVs of the examples kept after
``--subset`` are read.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchaudio
import torchaudio.functional as AF
from rich.console import Console
from rich.progress import track
from scipy.io import wavfile
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
PIPELINE_VERSION = f"logmel-v1-sr{SAMPLE_RATE}-len{CLIP_SAMPLES}-fft{N_FFT}-hop{HOP}-mels{N_MELS}-db{DB_FLOOR:g}"
CACHE_NAME = "decnn_logmel_cache.pt"
SHOW_PROGRESS_FROM = 200  # clips to compute before a progress bar is worth showing

AUDIOMNIST_LAYOUT = "AudioMNIST/data/<speaker>/<digit>_<speaker>_<index>.wav"
AUDIOMNIST_NAME = re.compile(r"^(\d)_(\d+)_(\d+)\.wav$", re.IGNORECASE)
AUDIOMNIST_TEST_SHARE = 0.2
FLUENT_FOLDER = "fluent_speech_commands_dataset"
FLUENT_LAYOUT = f"{FLUENT_FOLDER}/data/{{train,valid,test}}_data.csv and the wavs/ they list"
FLUENT_SPLITS = ("train", "valid", "test")
FLUENT_COLUMNS = ("path", "speakerId", "transcription", "action", "object", "location")
ACTIONS = ("activate", "bring", "change language", "deactivate", "decrease", "increase")


@cache
def _mel() -> torchaudio.transforms.MelSpectrogram:
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=SAMPLE_RATE, n_fft=N_FFT, win_length=N_FFT, hop_length=HOP, n_mels=N_MELS, power=2.0
    )


def fix_length(waveform: torch.Tensor, length: int = CLIP_SAMPLES) -> torch.Tensor:
    """The centred ``length`` samples of (..., T): zero-padded equally on both sides, or its middle cut out."""
    excess = waveform.shape[-1] - length
    if excess >= 0:
        start = excess // 2
        return waveform[..., start : start + length]
    left = -excess // 2
    return torch.nn.functional.pad(waveform, (left, -excess - left))


def log_mel(waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """The (1, 32, 32) log-mel image in [0, 1] (mels by frames) of a clip of any length and rate.

    ``waveform`` is (T,) or (channels, T), float in [-1, 1] (integer PCM samples are scaled into that range:
    signed by 2 ** (bits - 1), uint8 around 128); ``sample_rate`` is in Hz. See the module docstring for the
    steps.
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
    power = _mel()(mono)
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


def wav_log_mel(path: Path) -> torch.Tensor:
    """``log_mel`` of one WAV file: (1, 32, 32) in [0, 1]."""
    return log_mel(*read_wav(path))


def _save_atomically(payload: dict, path: Path) -> None:
    from decnn_cli.results import atomic_file

    with atomic_file(path) as handle:
        torch.save(payload, handle)


def _read_cache(path: Path) -> dict[tuple[str, int], torch.Tensor]:
    """(relative path, size) -> spectrogram of the cache at ``path``; empty when absent, stale or unreadable."""
    if not path.is_file():
        return {}
    try:
        payload = torch.load(path, weights_only=True)
        if payload.get("version") != PIPELINE_VERSION:
            return {}
        return dict(zip(zip(payload["files"], payload["sizes"], strict=True), payload["x"], strict=True))
    except Exception:  # a truncated or foreign file is recomputed, never trusted
        return {}


def spectrograms(folder: Path, files: Sequence[str], what: str) -> torch.Tensor:
    """(N, 1, 32, 32) log-mel images of ``files`` (paths relative to ``folder``), through the folder's cache."""
    sizes = []
    for name in files:
        path = folder / name
        if not path.is_file():
            raise DecnnError(f"{what}: {path} is missing; put the WAV file there (or the whole dataset)")
        sizes.append(path.stat().st_size)
    keys = list(zip(files, sizes, strict=True))
    cache_path = folder / CACHE_NAME
    cached = _read_cache(cache_path)
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
            cached[keys[i]] = wav_log_mel(folder / files[i])
        payload = {
            "version": PIPELINE_VERSION,
            "files": [name for name, _ in cached],
            "sizes": [size for _, size in cached],
            "x": torch.stack(list(cached.values())),
        }
        with contextlib.suppress(OSError):  # a read-only data folder only costs the recomputation next time
            _save_atomically(payload, cache_path)
    if not keys:
        return torch.empty(0, 1, N_MELS, N_FRAMES)
    return torch.stack([cached[key] for key in keys])


def _capped_indices(n: int, limit: int | None, seed: int) -> list[int]:
    """The examples ``cap`` keeps of a split of ``n`` (decided before any WAV is read)."""
    (index,) = cap(TensorDataset(torch.arange(n)), limit, seed).tensors
    return index.tolist()


def _splits(
    name: str,
    folder: Path,
    files: dict[str, list[str]],
    labels: dict[str, list[int]],
    cfg: DataConfig,
    output_names: tuple[str, ...],
    notes: list[str],
) -> Splits:
    """Spectrogram TensorDatasets for the train/val/test file lists, each capped at ``cfg.subset``."""
    data = {}
    for offset, split in enumerate(("train", "val", "test")):
        keep = _capped_indices(len(files[split]), cfg.subset, cfg.split_seed + offset)
        x = spectrograms(folder, [files[split][i] for i in keep], f"{name} {split}")
        y = torch.tensor([labels[split][i] for i in keep], dtype=torch.long)
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
    digit and the speaker come from the file name ``<digit>_<speaker>_<index>.wav``.
    """
    folder = resolve_root(cfg, AUDIOMNIST_LAYOUT) / "AudioMNIST"
    if not folder.is_dir():
        raise DecnnError(f"{folder} is missing; the data root must hold {AUDIOMNIST_LAYOUT}")
    found = sorted({*folder.glob("data/*/*.wav"), *folder.glob("data/*.wav"), *folder.glob("*.wav")})
    clips = []
    for path in found:
        match = AUDIOMNIST_NAME.match(path.name)
        if match:
            clips.append((path.relative_to(folder).as_posix(), int(match[1]), str(int(match[2]))))
    if not clips:
        seen = f" (found {len(found)} WAVs, none named <digit>_<speaker>_<index>.wav)" if found else ""
        raise DecnnError(f"no AudioMNIST recordings under {folder}{seen}; put them there as {AUDIOMNIST_LAYOUT}")
    return folder, clips


def split_speakers(
    speakers: Sequence[str], val_fraction: float, seed: int, test_share: float = AUDIOMNIST_TEST_SHARE
) -> tuple[list[str], list[str], list[str]]:
    """Seeded (train, val, test) speaker lists: ``test_share`` of the speakers for test, then
    ``val_fraction`` of the rest for val (each at least one speaker), so no speaker is in two splits."""
    ordered = sorted(set(speakers))
    if len(ordered) < 3:
        raise DecnnError(
            f"AudioMNIST is split by speaker and needs recordings of at least 3 speakers, found {len(ordered)}; "
            f"add more speaker folders as {AUDIOMNIST_LAYOUT}"
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
    return _splits("audiomnist", folder, files, labels, cfg, tuple(str(d) for d in range(10)), notes)


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
    return _splits("fluent", folder, files, labels, cfg, ACTIONS, notes)
