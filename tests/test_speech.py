"""Speech datasets: the log-mel pipeline, AudioMNIST, Fluent Speech Commands and FSDD in their real layouts."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.io import wavfile

from decnn_cli.cli import app
from decnn_cli.config import DataConfig
from decnn_cli.data import DATASETS, load_splits, speech
from decnn_cli.errors import DecnnError
from tests.conftest import REAL_DATA_ROOT

SPEAKERS = ("01", "02", "03")
# FSDD fixture: speakers are words; george and theo record at 8 kHz (FSDD's rate), jackson at 48 kHz.
FSDD_RATES = {"george": 8_000, "jackson": 48_000, "theo": 8_000}
FSDD_DIGITS = (0, 1, 2)
FSDD_TAKES = 15  # index 0-14 per digit and speaker: 0-4 test, 10 left per pair for train and val
FLUENT_ROWS = {
    # split: (speaker, action) per row; every action once in train
    "train": [("spkA", a) for a in speech.ACTIONS],
    "valid": [("spkB", "bring"), ("spkB", "increase"), ("spkB", "activate")],
    "test": [("spkC", "decrease"), ("spkC", "deactivate"), ("spkC", "change language"), ("spkC", "bring")],
}


def tone(freq: float, seconds: float, rate: int, amplitude: float = 0.5, channels: int = 1) -> np.ndarray:
    """A sine (T,) or (T, channels), channel c at ``amplitude / (c + 1)``."""
    t = np.arange(round(seconds * rate)) / rate
    wave = amplitude * np.sin(2 * np.pi * freq * t)
    return wave if channels == 1 else np.stack([wave / (c + 1) for c in range(channels)], axis=1)


def write_wav(path: Path, samples: np.ndarray, rate: int) -> Path:
    """16-bit PCM WAV of float samples in [-1, 1]."""
    path.parent.mkdir(parents=True, exist_ok=True)
    wavfile.write(path, rate, np.round(samples * 32767).astype(np.int16))
    return path


def write_audiomnist(root: Path, where: str = "speakers", speakers: tuple[str, ...] = SPEAKERS) -> Path:
    """3 speakers x 10 digits at 48 kHz, 0.5 s: pitch by digit, loudness by speaker (so every clip differs)."""
    base = root / "AudioMNIST"
    for s, speaker in enumerate(speakers):
        for digit in range(10):
            folder = {"speakers": base / "data" / speaker, "data": base / "data", "top": base}[where]
            name = f"{digit}_{speaker}_0.wav"
            write_wav(folder / name, tone(300 + 350 * digit, 0.5, 48_000, amplitude=0.15 + 0.25 * s), 48_000)
    (base / "data").mkdir(parents=True, exist_ok=True)
    (base / "data" / "audioMNIST_meta.txt").write_text("{}\n")
    return root


def write_fluent(root: Path) -> Path:
    """A small Fluent tree: the three CSVs as the original has them and 2 s, 16 kHz clips, pitch by action."""
    base = root / "fluent_speech_commands_dataset"
    (base / "data").mkdir(parents=True)
    for split, rows in FLUENT_ROWS.items():
        records = []
        for i, (speaker, action) in enumerate(rows):
            rel = f"wavs/speakers/{speaker}/{split}-{i:04d}.wav"
            freq = 300 + 500 * speech.ACTIONS.index(action)
            write_wav(base / rel, tone(freq, 2.0, 16_000), 16_000)
            records.append(
                {
                    "path": rel,
                    "speakerId": speaker,
                    "transcription": f"{action} something",
                    "action": action,
                    "object": "none",
                    "location": "none",
                }
            )
        pd.DataFrame(records).to_csv(base / "data" / f"{split}_data.csv")
    return root


def write_fsdd(root: Path, rates: dict[str, int] = FSDD_RATES) -> Path:
    """FSDD's layout: fsdd/recordings/<digit>_<speaker>_<index>.wav, 16-bit PCM, 0.4 s each; pitch by digit
    and index, loudness by speaker (so every clip differs and stays below 4 kHz)."""
    recordings = root / "fsdd" / "recordings"
    for s, (speaker, rate) in enumerate(rates.items()):
        for digit in FSDD_DIGITS:
            for index in range(FSDD_TAKES):
                freq = 300 + 800 * digit + 40 * index
                write_wav(recordings / f"{digit}_{speaker}_{index}.wav", tone(freq, 0.4, rate, 0.1 + 0.3 * s), rate)
    return root


def fsdd_name_parts(name: str) -> tuple[int, str, int]:
    digit, speaker, index = name.removesuffix(".wav").split("_")
    return int(digit), speaker, int(index)


@pytest.fixture
def audiomnist_root(tmp_path: Path) -> Path:
    return write_audiomnist(tmp_path / "data")


@pytest.fixture
def fluent_root(tmp_path: Path) -> Path:
    return write_fluent(tmp_path / "data")


@pytest.fixture
def fsdd_root(tmp_path: Path) -> Path:
    return write_fsdd(tmp_path / "data")


# The pipeline ---------------------------------------------------------------------------------------------


def test_log_mel_is_32x32_in_unit_range_for_any_rate_length_and_channels(tmp_path: Path):
    for rate in (8_000, 16_000, 44_100, 48_000):
        for seconds in (0.3, 1.0, 2.5):
            for channels in (1, 2):
                path = write_wav(
                    tmp_path / f"{rate}-{seconds}-{channels}.wav", tone(440, seconds, rate, 0.5, channels), rate
                )
                waveform, read_rate = speech.read_wav(path)
                assert read_rate == rate and waveform.shape == (channels, round(seconds * rate))
                x = speech.log_mel(waveform, read_rate)
                assert x.shape == (1, 32, 32) and x.dtype == torch.float32
                assert torch.isfinite(x).all() and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
                assert float(x.max()) > 0.5  # the tone is there


def test_log_mel_scale_is_fixed_not_per_clip():
    silence = speech.log_mel(torch.zeros(16_000), 16_000)
    assert float(silence.max()) == 0.0
    loud = speech.log_mel(torch.from_numpy(tone(1000, 1.0, 16_000, amplitude=1.0)).float(), 16_000)
    quiet = speech.log_mel(torch.from_numpy(tone(1000, 1.0, 16_000, amplitude=0.01)).float(), 16_000)
    assert float(loud.max()) > 0.98  # a full-scale sine is ~0 dB
    # 40 dB quieter is half of the 80 dB range lower.
    assert float(loud.max() - quiet.max()) == pytest.approx(0.5, abs=0.02)
    low = speech.log_mel(torch.from_numpy(tone(300, 1.0, 16_000)).float(), 16_000)
    high = speech.log_mel(torch.from_numpy(tone(3000, 1.0, 16_000)).float(), 16_000)
    assert int(low[0].mean(1).argmax()) < int(high[0].mean(1).argmax())  # row 0 is the lowest mel band


def test_log_mel_scales_integer_pcm_like_floats():
    wave = torch.from_numpy(tone(440, 0.7, 22_050)).float()
    pcm = torch.round(wave * 32767).to(torch.int16)
    assert torch.allclose(speech.log_mel(pcm, 22_050), speech.log_mel(wave, 22_050), atol=1e-3)


def test_mel_range_upper_edge_is_the_lowest_nyquist_frequency_at_most_8khz():
    assert speech.mel_f_max([8_000, 48_000, 8_000]) == 4_000
    assert speech.mel_f_max([11_025]) == 5_512.5
    assert speech.mel_f_max([16_000]) == speech.mel_f_max([48_000]) == speech.mel_f_max([]) == 8_000
    assert speech.pipeline_version(4_000) != speech.pipeline_version(8_000)
    assert speech.pipeline_version(4_000).endswith("-mel0-4000Hz")
    with pytest.raises(DecnnError, match=r"upper edge must be in \(0, 8000\] Hz"):
        speech.log_mel(torch.zeros(100), 8_000, f_max=9_000)


def test_8khz_audio_fills_every_mel_row_only_with_the_rule():
    """Broadband noise recorded at 8 kHz: over 0-8 kHz the rows above 4 kHz are empty, over 0-4 kHz none is."""
    noise = torch.from_numpy(np.random.default_rng(0).uniform(-0.05, 0.05, 8_000)).float()  # -26 dB RMS
    wide = speech.log_mel(noise, 8_000, f_max=8_000)[0].mean(1)  # (32,) mean over frames per mel row
    fitted = speech.log_mel(noise, 8_000, f_max=speech.mel_f_max([8_000]))[0].mean(1)
    assert bool((wide[-4:] < 0.01).all())  # the top 4 rows: below -79 dB on average
    assert float(fitted.min()) > 0.3
    # The default range is unchanged: AudioMNIST's and Fluent's spectrograms are what they were.
    clip = torch.from_numpy(tone(1000, 1.0, 16_000)).float()
    assert torch.equal(speech.log_mel(clip, 16_000), speech.log_mel(clip, 16_000, f_max=8_000))


def test_clips_are_centred_when_padded_or_cropped():
    assert speech.fix_length(torch.arange(7), 3).tolist() == [2, 3, 4]
    assert speech.fix_length(torch.ones(2), 5).tolist() == [0, 1, 1, 0, 0]


def test_registry_has_the_speech_datasets_and_states_the_mel_range():
    assert all(DATASETS[name].needs_root for name in ("audiomnist", "fluent", "fsdd"))
    assert "0-8 kHz" in DATASETS["audiomnist"].summary and "0-8 kHz" in DATASETS["fluent"].summary
    assert "Nyquist frequency of its lowest sample rate" in DATASETS["fsdd"].summary


# AudioMNIST -----------------------------------------------------------------------------------------------


def _files_of(x: torch.Tensor, reference: dict[str, torch.Tensor]) -> list[str]:
    """The file name of each row of ``x``, by matching it to the spectrogram of every file."""
    names = list(reference)
    table = torch.stack([reference[n] for n in names]).flatten(1)
    gap = (x.flatten(1)[:, None] - table[None]).abs().amax(dim=2)
    distance, index = gap.min(dim=1)
    assert float(distance.max()) < 1e-5
    return [names[i] for i in index.tolist()]


def test_audiomnist_loads_split_by_speaker_with_digit_labels(audiomnist_root: Path):
    splits = load_splits(DataConfig(name="audiomnist", root=audiomnist_root))
    spec = splits.spec
    assert spec.in_shape == (1, 32, 32) and spec.task == "multiclass" and spec.num_outputs == 10
    assert spec.output_names == tuple(str(d) for d in range(10))
    assert len(spec.mean) == 1 and len(spec.std) == 1
    files = sorted((audiomnist_root / "AudioMNIST" / "data").glob("*/*.wav"))
    reference = {p.name: speech.wav_log_mel(p) for p in files}
    seen = {}
    for split in ("train", "val", "test"):
        x, y = getattr(splits, split).tensors
        assert x.shape[1:] == (1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        # Match rows back to their files: the label is the digit of the file name, the speaker its second part.
        names = _files_of(x, reference)
        assert [int(name.split("_")[0]) for name in names] == y.tolist()
        seen[split] = {name.split("_")[1] for name in names}
        assert len(x) == 10 * len(seen[split])
    assert seen["train"].isdisjoint(seen["val"]) and seen["train"].isdisjoint(seen["test"])
    assert seen["val"].isdisjoint(seen["test"])
    assert seen["train"] | seen["val"] | seen["test"] == set(SPEAKERS)


@pytest.mark.parametrize("where", ["data", "top"])
def test_audiomnist_accepts_wavs_directly_in_its_folders(tmp_path: Path, where: str):
    splits = load_splits(DataConfig(name="audiomnist", root=write_audiomnist(tmp_path / "data", where)))
    assert len(splits.train) + len(splits.val) + len(splits.test) == 30


def test_speaker_split_is_seeded_and_disjoint():
    speakers = [f"{i:02d}" for i in range(1, 61)]
    train, val, test = speech.split_speakers(speakers, 0.1, seed=0)
    assert (len(train), len(val), len(test)) == (43, 5, 12)
    assert set(train) | set(val) | set(test) == set(speakers)
    assert len(set(train) | set(val) | set(test)) == 60
    assert speech.split_speakers(speakers, 0.1, seed=0) == (train, val, test)
    assert speech.split_speakers(speakers, 0.1, seed=1)[2] != test


def test_audiomnist_caches_spectrograms_and_reads_only_the_subset(audiomnist_root: Path, monkeypatch):
    compute = speech.wav_log_mel
    read: list[Path] = []
    monkeypatch.setattr(speech, "wav_log_mel", lambda path, *args: read.append(path) or compute(path, *args))
    cfg = DataConfig(name="audiomnist", root=audiomnist_root, subset=3)
    small = load_splits(cfg)
    assert all(len(getattr(small, s)) == 3 for s in ("train", "val", "test"))
    assert len(read) == 9
    assert (audiomnist_root / "AudioMNIST" / speech.CACHE_NAME).is_file()
    full = load_splits(DataConfig(name="audiomnist", root=audiomnist_root))
    assert len(read) == 30  # the 9 cached clips are not read again

    def fail(path: Path, *args: float) -> torch.Tensor:
        raise AssertionError(f"{path} was read although it is cached")

    monkeypatch.setattr(speech, "wav_log_mel", fail)
    again = load_splits(DataConfig(name="audiomnist", root=audiomnist_root))
    for split in ("train", "val", "test"):
        for a, b in zip(getattr(full, split).tensors, getattr(again, split).tensors, strict=True):
            assert torch.equal(a, b)
    assert torch.equal(load_splits(cfg).train.tensors[0], small.train.tensors[0])


def test_caches_written_before_the_mel_range_was_a_setting_stay_valid(audiomnist_root: Path, monkeypatch):
    cfg = DataConfig(name="audiomnist", root=audiomnist_root)
    full = load_splits(cfg)
    cache = audiomnist_root / "AudioMNIST" / speech.CACHE_NAME
    payload = torch.load(cache, weights_only=True)
    assert payload["version"] == speech.pipeline_version(8_000)
    payload["version"] = speech.PIPELINE_VERSION_0_8KHZ  # the key such a cache carries
    torch.save(payload, cache)

    def fail(path: Path, *args: float) -> torch.Tensor:
        raise AssertionError(f"{path} was read although it is cached")

    monkeypatch.setattr(speech, "wav_log_mel", fail)
    assert torch.equal(load_splits(cfg).train.tensors[0], full.train.tensors[0])
    # ... but only for the range it holds: a 0-4 kHz request recomputes.
    assert speech._read_cache(cache, 8_000) and not speech._read_cache(cache, 4_000)


def test_cache_is_not_written_into_a_folder_marked_read_only(audiomnist_root: Path):
    folder = audiomnist_root / "AudioMNIST"
    folder.chmod(0o555)
    try:
        load_splits(DataConfig(name="audiomnist", root=audiomnist_root))
        assert not (folder / speech.CACHE_NAME).exists()
    finally:
        folder.chmod(0o755)


def test_audiomnist_accepts_speakers_named_by_words(tmp_path: Path):
    root = write_audiomnist(tmp_path / "data", speakers=("george", "jackson", "theo"))
    splits = load_splits(DataConfig(name="audiomnist", root=root))
    assert len(splits.train) + len(splits.val) + len(splits.test) == 30
    assert re.search(r"test \['(george|jackson|theo)'\]", splits.notes[0])


def test_audiomnist_missing_folder_says_where_to_put_it(tmp_path: Path):
    (tmp_path / "data").mkdir()
    with pytest.raises(DecnnError, match=r"AudioMNIST is missing.*AudioMNIST/data/<speaker>"):
        load_splits(DataConfig(name="audiomnist", root=tmp_path / "data"))


def test_audiomnist_without_wavs_is_a_clear_error(tmp_path: Path):
    (tmp_path / "data" / "AudioMNIST" / "data" / "01").mkdir(parents=True)
    with pytest.raises(DecnnError, match="no WAV files under .*AudioMNIST; put AudioMNIST's recordings there"):
        load_splits(DataConfig(name="audiomnist", root=tmp_path / "data"))
    write_wav(tmp_path / "data" / "AudioMNIST" / "data" / "01" / "hello.wav", tone(440, 0.2, 8000), 8000)
    with pytest.raises(
        DecnnError, match=r"none of the 1 WAV files under .* \(e\.g\. hello\.wav\) is named <digit>_<speaker>_<index>"
    ):
        load_splits(DataConfig(name="audiomnist", root=tmp_path / "data"))


def test_audiomnist_needs_three_speakers(audiomnist_root: Path):
    shutil.rmtree(audiomnist_root / "AudioMNIST" / "data" / "03")
    with pytest.raises(DecnnError, match=r"at least 3 speakers, but its recordings are of 2 \(1, 2\)"):
        load_splits(DataConfig(name="audiomnist", root=audiomnist_root))


def test_corrupt_wav_names_the_file(audiomnist_root: Path):
    bad = audiomnist_root / "AudioMNIST" / "data" / "02" / "4_02_0.wav"
    bad.write_bytes(b"not a wav at all")
    with pytest.raises(DecnnError, match=r"could not read WAV file .*4_02_0\.wav"):
        load_splits(DataConfig(name="audiomnist", root=audiomnist_root))


# Fluent Speech Commands -----------------------------------------------------------------------------------


def test_fluent_uses_the_official_splits_and_action_labels(fluent_root: Path):
    splits = load_splits(DataConfig(name="fluent", root=fluent_root))
    assert splits.spec.output_names == speech.ACTIONS == tuple(sorted(speech.ACTIONS))
    assert splits.spec.in_shape == (1, 32, 32) and splits.spec.num_outputs == 6
    for split, official in (("train", "train"), ("val", "valid"), ("test", "test")):
        x, y = getattr(splits, split).tensors
        assert x.shape == (len(FLUENT_ROWS[official]), 1, 32, 32)
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        assert y.tolist() == [speech.ACTIONS.index(a) for _, a in FLUENT_ROWS[official]]
        # The pitch of each clip is its action's, so the loudest mel band rises with the class index.
        bands = x[:, 0].mean(2).argmax(1)
        order = torch.argsort(y)
        assert torch.all(bands[order][1:] >= bands[order][:-1])
    capped = load_splits(DataConfig(name="fluent", root=fluent_root, subset=2))
    assert [len(getattr(capped, s)) for s in ("train", "val", "test")] == [2, 2, 2]


def test_fluent_missing_folder_and_csv(tmp_path: Path, fluent_root: Path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DecnnError, match=r"fluent_speech_commands_dataset is missing.*_data\.csv"):
        load_splits(DataConfig(name="fluent", root=tmp_path / "empty"))
    (fluent_root / "fluent_speech_commands_dataset" / "data" / "test_data.csv").unlink()
    with pytest.raises(DecnnError, match=r"test_data\.csv is missing"):
        load_splits(DataConfig(name="fluent", root=fluent_root))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            ",path,speakerId,transcription,object,location\n0,wavs/a.wav,s,t,o,l\n",
            r"lacks the column\(s\) \['action'\]",
        ),
        (",path,speakerId,transcription,action,object,location\n0,wavs/a.wav,s,t,jump,o,l\n", "'jump'.* not among"),
        (",path,speakerId,transcription,action,object,location\n", "lists no recordings"),
        ("", "is malformed"),
        ('a,"b\n1,2,3,4\n', "is malformed"),
    ],
)
def test_fluent_malformed_csv_is_a_clear_error(fluent_root: Path, content: str, message: str):
    (fluent_root / "fluent_speech_commands_dataset" / "data" / "valid_data.csv").write_text(content)
    with pytest.raises(DecnnError, match=message):
        load_splits(DataConfig(name="fluent", root=fluent_root))


def test_fluent_without_wavs_is_a_clear_error(fluent_root: Path):
    shutil.rmtree(fluent_root / "fluent_speech_commands_dataset" / "wavs")
    with pytest.raises(DecnnError, match="none of the WAVs the Fluent CSVs list are under .*put the dataset's wavs/"):
        load_splits(DataConfig(name="fluent", root=fluent_root))


def test_fluent_single_missing_wav_is_named(fluent_root: Path):
    (fluent_root / "fluent_speech_commands_dataset" / "wavs" / "speakers" / "spkC" / "test-0001.wav").unlink()
    with pytest.raises(DecnnError, match=r"test-0001\.wav is missing"):
        load_splits(DataConfig(name="fluent", root=fluent_root))


# Free Spoken Digit Dataset --------------------------------------------------------------------------------


def _fsdd_reference(root: Path, f_max: float) -> dict[str, torch.Tensor]:
    return {p.name: speech.wav_log_mel(p, f_max) for p in sorted((root / "fsdd" / "recordings").glob("*.wav"))}


def test_fsdd_loads_word_speakers_on_its_index_split(fsdd_root: Path):
    splits = load_splits(DataConfig(name="fsdd", root=fsdd_root))
    spec = splits.spec
    assert spec.name == "fsdd" and spec.in_shape == (1, 32, 32) and spec.task == "multiclass"
    assert spec.output_names == tuple(str(d) for d in range(10))
    reference = _fsdd_reference(fsdd_root, 4_000)
    names = {}
    for split in ("train", "val", "test"):
        x, y = getattr(splits, split).tensors
        assert x.shape[1:] == (1, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.long
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
        names[split] = _files_of(x, reference)
        assert [fsdd_name_parts(name)[0] for name in names[split]] == y.tolist()
    # Test is exactly the recordings with index 0-4; train and val share out the rest without overlap.
    assert set(names["test"]) == {name for name in reference if fsdd_name_parts(name)[2] < 5}
    assert len(names["test"]) == len(FSDD_RATES) * len(FSDD_DIGITS) * 5
    assert set(names["train"]).isdisjoint(names["val"])
    assert set(names["train"]) | set(names["val"]) == {name for name in reference if fsdd_name_parts(name)[2] >= 5}
    assert len(names["val"]) == 9  # ceil(0.1 * 90)
    # Stratified: every digit and every (word-named) speaker is in both train and val.
    for split in ("train", "val"):
        parts = [fsdd_name_parts(name) for name in names[split]]
        assert {d for d, _, _ in parts} == set(FSDD_DIGITS)
        assert {s for _, s, _ in parts} == set(FSDD_RATES)


def test_fsdd_mixed_sample_rates_share_the_lowest_nyquist_range(fsdd_root: Path):
    """8 kHz and 48 kHz recordings in one dataset: both load to 32x32, all over the rule's 0-4 kHz."""
    splits = load_splits(DataConfig(name="fsdd", root=fsdd_root))
    recordings = fsdd_root / "fsdd" / "recordings"
    x, _ = splits.test.tensors
    names = _files_of(x, _fsdd_reference(fsdd_root, 4_000))
    for rate, speaker in ((8_000, "george"), (48_000, "jackson")):
        row = names.index(f"2_{speaker}_3.wav")
        waveform, read_rate = speech.read_wav(recordings / names[row])
        assert read_rate == rate
        assert torch.allclose(x[row], speech.log_mel(waveform, rate, f_max=4_000), atol=1e-6)
        assert not torch.allclose(x[row], speech.log_mel(waveform, rate, f_max=8_000), atol=1e-2)
    assert "mel range: 0-4000 Hz, the Nyquist frequency of the lowest sample rate found" in "\n".join(splits.notes)
    # 48 kHz alone: the rule's cap, 8 kHz, as for AudioMNIST (_files_of asserts each row equals its file's).
    high_root = write_fsdd(fsdd_root.parent / "high", {"ada": 48_000, "bob": 48_000})
    high = load_splits(DataConfig(name="fsdd", root=high_root))
    assert "mel range: 0-8000 Hz" in "\n".join(high.notes)
    assert len(_files_of(high.test.tensors[0], _fsdd_reference(high_root, 8_000))) == 30


def test_fsdd_notes_list_speakers_counts_and_rates(fsdd_root: Path):
    notes = "\n".join(load_splits(DataConfig(name="fsdd", root=fsdd_root)).notes)
    assert "index 0-4 of every digit and speaker are test" in notes
    assert "speakers (3): george, jackson, theo" in notes
    assert "recordings: train 81, val 9, test 45" in notes
    assert re.search(r"george 2\d/\d/15, jackson 2\d/\d/15, theo 2\d/\d/15", notes)
    assert "sample rates found: 8000 Hz (90 recordings), 48000 Hz (45 recordings)" in notes
    capped = "\n".join(load_splits(DataConfig(name="fsdd", root=fsdd_root, subset=4)).notes)
    assert "recordings: train 4, val 4, test 4 (data.subset 4)" in capped
    assert "sample rates found: 8000 Hz (90 recordings)" in capped  # the range is the dataset's, not the subset's


def test_fsdd_validation_is_seeded_stratified_and_disjoint_from_train():
    clips = [
        speech.FsddClip(f"recordings/{d}_{s}_{i}.wav", d, s, i)
        for d in range(10)
        for s in ("george", "jackson", "nicolas", "theo")
        for i in range(50)
    ]
    split = speech.split_fsdd(clips, 0.1, seed=0)
    assert [len(split[k]) for k in ("train", "val", "test")] == [1620, 180, 200]
    assert {c.index for c in split["test"]} == set(range(5))
    assert min(c.index for c in split["train"] + split["val"]) == 5
    assert set(split["train"]).isdisjoint(split["val"])
    pairs = {(c.digit, c.speaker) for c in split["val"]}
    assert len(pairs) == 40  # every digit-speaker pair has 4 or 5 of the 180
    assert speech.split_fsdd(clips, 0.1, seed=0) == split
    other = speech.split_fsdd(clips, 0.1, seed=1)
    assert other["val"] != split["val"] and other["test"] == split["test"]


def test_fsdd_missing_folder_says_where_to_put_it(tmp_path: Path):
    (tmp_path / "data" / "fsdd").mkdir(parents=True)
    with pytest.raises(
        DecnnError,
        match=r"fsdd/recordings is missing; the data root must hold fsdd/recordings/<digit>_<speaker>_<index>\.wav$",
    ):
        load_splits(DataConfig(name="fsdd", root=tmp_path / "data"))
    (tmp_path / "data" / "fsdd" / "recordings").mkdir()
    with pytest.raises(DecnnError, match=r"no WAV files in .*recordings; put FSDD's recordings there"):
        load_splits(DataConfig(name="fsdd", root=tmp_path / "data"))


def test_fsdd_wavs_named_otherwise_name_the_expected_layout(tmp_path: Path):
    recordings = tmp_path / "data" / "fsdd" / "recordings"
    write_wav(recordings / "seven.wav", tone(440, 0.2, 8_000), 8_000)
    write_wav(recordings / "7-jackson-3.wav", tone(440, 0.2, 8_000), 8_000)
    with pytest.raises(DecnnError) as raised:
        load_splits(DataConfig(name="fsdd", root=tmp_path / "data"))
    message = str(raised.value)
    assert "none of the 2 WAV files in" in message and "is named <digit>_<speaker>_<index>.wav" in message
    assert "the data root must hold fsdd/recordings/<digit>_<speaker>_<index>.wav" in message
    assert message.count(";") == 1 and "\n" not in message


def test_fsdd_without_test_indices_or_too_few_takes_is_a_clear_error(tmp_path: Path, fsdd_root: Path):
    recordings = fsdd_root / "fsdd" / "recordings"
    with pytest.raises(DecnnError, match=r"set data.val_fraction between 0\.100 and 0\.900"):
        load_splits(DataConfig(name="fsdd", root=fsdd_root, val_fraction=0.05))
    for path in recordings.glob("*_[0-4].wav"):
        path.unlink()
    with pytest.raises(DecnnError, match="test set is the recordings with index 0-4 .* but none has such an index"):
        load_splits(DataConfig(name="fsdd", root=fsdd_root))
    lonely = tmp_path / "lonely" / "fsdd" / "recordings"
    for index in range(6):
        write_wav(lonely / f"1_ada_{index}.wav", tone(440, 0.2, 8_000), 8_000)
    with pytest.raises(DecnnError, match="ada has only one recording of digit 1 outside the test indices 0-4"):
        load_splits(DataConfig(name="fsdd", root=tmp_path / "lonely"))


def test_train_prints_and_saves_the_split_notes(runner, fsdd_root: Path, tmp_path: Path):
    out = tmp_path / "runs"
    args = ["train", "--dataset", "fsdd", "--data-root", str(fsdd_root), "--method", "standard"]
    result = runner.invoke(app, [*args, "--epochs", "1", "--quiet", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "fsdd: speakers (3): george, jackson, theo" in result.stderr
    assert "fsdd: recordings: train 81, val 9, test 45" in result.stderr
    (run,) = out.iterdir()
    metrics = json.loads((run / "metrics.json").read_text())
    assert "speakers (3): george, jackson, theo" in metrics["data_notes"]
    assert (metrics["train_examples"], metrics["val_examples"], metrics["test_examples"]) == (81, 9, 45)


@pytest.mark.skipif(
    not (REAL_DATA_ROOT and (Path(REAL_DATA_ROOT) / "fsdd" / "recordings").is_dir()),
    reason="set DECNN_DATA_ROOT to a folder holding fsdd/recordings to run the real FSDD test",
)
def test_real_fsdd_uses_its_index_split_and_fills_every_mel_row():
    names = [p.name for p in (Path(REAL_DATA_ROOT) / "fsdd" / "recordings").glob("*.wav")]
    n_test = sum(fsdd_name_parts(name)[2] < 5 for name in names)  # 4 speakers x 10 digits x 5 takes = 200
    splits = load_splits(DataConfig(name="fsdd", root=Path(REAL_DATA_ROOT)))
    assert len(splits.test) == n_test
    assert len(splits.train) + len(splits.val) + len(splits.test) == len(names)
    assert len(splits.val) == int(np.ceil(0.1 * (len(names) - n_test)))
    speakers = sorted({fsdd_name_parts(name)[1] for name in names})
    assert f"speakers ({len(speakers)}): {', '.join(speakers)}" in splits.notes
    rows = splits.train.tensors[0][:, 0].mean(dim=(0, 2))  # (32,) mean of each mel row over clips and frames
    assert float(rows.min()) > 0.03, rows  # over 0-8 kHz the five rows above 4 kHz average about 0.001


# folder:PATH of WAV files ------------------------------------------------------------------------------


WORDS = ("left", "right", "yes")


def write_word_tree(root: Path, speakers: int = 4, takes: int = 5, lists: bool = False) -> Path:
    """Speech Commands' layout: <word>/<speaker>_nohash_<take>.wav, 8 kHz for speaker 0 and 16 kHz for the others,
    pitch by word; a _background_noise_ folder that is not a class; with ``lists``, validation_list.txt (speaker
    1) and testing_list.txt (speaker 2) as Speech Commands names its splits."""
    for w, word in enumerate(WORDS):
        for s in range(speakers):
            rate = 8_000 if s == 0 else 16_000
            for take in range(takes):
                clip = tone(300 + 500 * w, 0.4 + 0.05 * take, rate, amplitude=0.1 + 0.2 * s)
                write_wav(root / word / f"spk{s}_nohash_{take}.wav", clip, rate)
    write_wav(root / "_background_noise_" / "noise.wav", tone(50, 3.0, 16_000), 16_000)
    (root / "LICENSE").write_text("not a clip\n")
    if lists:
        for name, speaker in (("validation_list.txt", 1), ("testing_list.txt", 2)):
            lines = [f"{word}/spk{speaker}_nohash_{t}.wav" for word in WORDS for t in range(takes)]
            (root / name).write_text("\n".join(lines) + "\n")
    return root


def _folder_cfg(root: Path, *updates: tuple[str, object]) -> DataConfig:
    return DataConfig(name=f"folder:{root}", **dict(updates))


def test_a_folder_of_wav_class_folders_follows_speech_commands_lists_as_spectrograms(tmp_path: Path):
    root = write_word_tree(tmp_path / "commands", lists=True)
    splits = load_splits(_folder_cfg(root))
    assert splits.spec.output_names == WORDS and splits.spec.in_shape == (1, 32, 32)  # no _background_noise_
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [30, 15, 15]  # speakers 0+3 / 1 / 2
    first_test = speech.wav_log_mel(root / "left/spk2_nohash_0.wav", f_max=4000.0)  # 0-4 kHz: speaker 0 is 8 kHz
    assert torch.equal(splits.test.tensors[0][0], first_test)
    notes = " ".join(splits.notes)
    assert "validation_list.txt and testing_list.txt" in notes and "8000 Hz (15 clips), 16000 Hz (45 clips)" in notes
    assert "mel range 0-4000 Hz" in notes
    assert (root / speech.CACHE_NAME).is_file()  # computed once, as for the named speech datasets


def test_a_folder_of_wav_class_folders_without_lists_splits_every_class_and_says_speakers_may_mix(tmp_path: Path):
    root = write_word_tree(tmp_path / "words", speakers=5, takes=4)
    splits = load_splits(_folder_cfg(root, ("val_fraction", 0.25)))
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [36, 12, 12]
    for part in (splits.train, splits.val, splits.test):  # stratified: every class in every split, evenly
        assert torch.bincount(part.tensors[1], minlength=3).tolist() == [len(part) // 3] * 3
    assert "a speaker may be in two splits" in " ".join(splits.notes)
    with pytest.raises(DecnnError, match="holds sound.*drop data.image_size"):
        load_splits(_folder_cfg(root, ("image_size", 32)))


def test_decnn_train_on_a_folder_of_wavs_trains_redecnn_and_a_folder_of_neither_is_named(runner, tmp_path: Path):
    root = write_word_tree(tmp_path / "words", lists=True)
    out = tmp_path / "runs"
    tiny = ["train.epochs=1", "model.depth=2", "model.width=16", "model.decoder_width=32", "method.recursion_depth=2"]
    args = ["train", "--dataset", f"folder:{root}", "--method", "redecnn", "--out", str(out), "-q"]
    result = runner.invoke(app, args + [a for s in tiny for a in ("--set", s)])
    assert result.exit_code == 0, result.output
    metrics = json.loads(next(out.iterdir()).joinpath("metrics.json").read_text())
    assert metrics["train_examples"] == 30 and metrics["batch_size"] == 32
    assert any("log-mel spectrograms" in note for note in metrics["data_notes"])
    empty = tmp_path / "notes"
    empty.mkdir()
    (empty / "a.txt").write_text("x")
    result = runner.invoke(app, ["train", "--dataset", f"folder:{empty}", "--out", str(out), "-q"])
    assert result.exit_code == 2 and "holds no image" in result.output and "no WAV file" in result.output
