from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from torchvision.io import decode_image, read_file

from decnn_cli.data.corruptions import (
    CORRUPTIONS,
    DEFAULT_SEVERITY,
    SEVERITIES,
    SEVERITY_PARAMS,
    SHEET_COLUMNS,
    corrupt,
    corruption_sheet,
    parse_corruption_spec,
)
from decnn_cli.errors import DecnnError

NAMES = [
    "shot_noise",
    "impulse_noise",
    "glass_blur",
    "motion_blur",
    "shear",
    "scale",
    "rotate",
    "brightness",
    "translate",
    "stripe",
    "fog",
    "spatter",
    "dotted_line",
    "zigzag",
    "canny_edges",
]


def _soften(x: torch.Tensor) -> torch.Tensor:
    """Blur hard-edged shapes a little, like the anti-aliased strokes of MNIST."""
    kernel = torch.tensor([0.25, 0.5, 0.25])
    kernel = (kernel[:, None] * kernel[None, :]).expand(x.shape[1], 1, 3, 3)
    return torch.nn.functional.conv2d(x, kernel, padding=1, groups=x.shape[1]).clamp(0.0, 1.0)


def digits_like() -> torch.Tensor:
    """Four 28x28 MNIST-like images: bright, asymmetric strokes and blobs on a dark background."""
    x = torch.zeros(4, 1, 28, 28)
    x[0, 0, 5:8, 7:21] = 1.0  # a "7": top bar and a slanted leg
    for row in range(8, 23):
        col = 19 - (row - 8) // 2
        x[0, 0, row, col - 1 : col + 2] = 1.0
    x[1, 0, 5:23, 9:13] = 1.0  # an "L"
    x[1, 0, 19:23, 9:20] = 0.9
    x[2, 0, 6:14, 6:14] = 0.8  # an off-centre square and a bar
    x[2, 0, 17:21, 10:24] = 1.0
    x[3, 0, 4:24, 13:17] = 1.0  # a "1" with a foot
    x[3, 0, 20:24, 9:20] = 0.7
    return _soften(x)


def rgb_64() -> torch.Tensor:
    """One 3x64x64 image: a colour gradient with a red square and a dark bar."""
    ramp = torch.linspace(0.1, 0.8, 64)
    x = torch.stack([ramp[None, :].expand(64, 64), ramp[:, None].expand(64, 64), torch.full((64, 64), 0.4)])
    x[:, 12:30, 20:44] = torch.tensor([0.9, 0.1, 0.1])[:, None, None]
    x[:, 40:48, 8:56] = 0.05
    return _soften(x[None])


def test_registry_has_the_fifteen_mnist_c_names_in_order_with_five_levels_each():
    assert list(CORRUPTIONS) == NAMES
    assert list(SEVERITY_PARAMS) == NAMES
    assert SEVERITIES == (1, 2, 3, 4, 5) and DEFAULT_SEVERITY in SEVERITIES
    assert all(len(params) == len(SEVERITIES) for params in SEVERITY_PARAMS.values())


@pytest.mark.parametrize("name", NAMES)
def test_corruption_changes_every_image_keeps_shape_dtype_and_range_and_is_seeded(name):
    x = digits_like()
    before = x.clone()
    y = corrupt(x, name, seed=1)
    assert y.shape == x.shape and y.dtype == x.dtype
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert ((y - x).abs().flatten(1).amax(1) > 0.05).all(), "every image should change visibly"
    assert torch.equal(x, before), "the input must not be modified"
    assert torch.equal(corrupt(x, name, seed=1), y)
    y64 = corrupt(x.double(), name, seed=1)
    assert y64.dtype == torch.float64 and y64.shape == x.shape


@pytest.mark.parametrize("name", NAMES)
def test_mean_change_grows_strictly_with_severity(name):
    x = digits_like()
    change = [float((corrupt(x, name, s, seed=0) - x).abs().mean()) for s in SEVERITIES]
    assert all(a < b for a, b in itertools.pairwise(change)), change


@pytest.mark.parametrize("name", NAMES)
def test_works_on_3_channel_64x64_images(name):
    x = rgb_64()
    y = corrupt(x, name, seed=0)
    assert y.shape == (1, 3, 64, 64) and y.dtype == torch.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert float((y - x).abs().mean()) > 0.002


def test_blank_and_empty_batches_pass_through():
    empty = torch.zeros(0, 1, 28, 28)
    assert corrupt(empty, "fog").shape == empty.shape
    blank = corrupt(torch.zeros(2, 1, 28, 28), "canny_edges")
    assert blank.shape == (2, 1, 28, 28) and float(blank.abs().max()) == 0.0


@pytest.mark.parametrize(
    ("name", "severity", "needle"), [("foggy", 3, "shot_noise, impulse_noise"), ("fog", 6, "1, 2, 3, 4, 5")]
)
def test_corrupt_rejects_unknown_name_or_severity_listing_the_valid_ones(name, severity, needle):
    with pytest.raises(DecnnError, match=needle):
        corrupt(digits_like(), name, severity)


def test_corrupt_rejects_images_that_are_not_a_float_batch():
    with pytest.raises(DecnnError, match=r"\(N, C, H, W\)"):
        corrupt(torch.zeros(1, 28, 28), "fog")
    with pytest.raises(DecnnError, match=r"\(N, C, H, W\)"):
        corrupt(torch.zeros(1, 1, 28, 28, dtype=torch.uint8), "fog")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("corrupt:fog", [("fog", DEFAULT_SEVERITY)]),
        ("corrupt:fog@5", [("fog", 5)]),
        ("corrupt:canny_edges@1", [("canny_edges", 1)]),
        ("corrupt:all", [(name, DEFAULT_SEVERITY) for name in NAMES]),
        ("corrupt:all@2", [(name, 2) for name in NAMES]),
    ],
)
def test_parse_corruption_spec_accepts_names_all_and_severities(spec, expected):
    assert parse_corruption_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        ("fog", "does not start with 'corrupt:'"),
        ("corrupt-fog@2", "does not start with 'corrupt:'"),
        ("corrupt:foggy", "unknown corruption 'foggy'"),
        ("corrupt:", "unknown corruption ''"),
        ("corrupt:fog@0", "severity '0'"),
        ("corrupt:fog@6", "severity '6'"),
        ("corrupt:all@6", "severity '6'"),
        ("corrupt:fog@", "severity ''"),
        ("corrupt:fog@high", "severity 'high'"),
    ],
)
def test_parse_corruption_spec_rejects_bad_specs_saying_what_to_write(spec, problem):
    with pytest.raises(DecnnError) as caught:
        parse_corruption_spec(spec)
    message = str(caught.value)
    assert problem in message
    assert "corrupt:NAME@SEVERITY" in message and ", ".join(NAMES) in message
    assert message.count(". ") == 0, "one sentence"


def test_corruption_sheet_writes_a_png_grid_atomically(tmp_path: Path):
    image = digits_like()[0]
    path = tmp_path / "figures" / "sheet.png"
    corruption_sheet(image, path)
    assert [p.name for p in path.parent.iterdir()] == ["sheet.png"], "no temporary file left behind"
    grid = decode_image(read_file(str(path)))
    tiles, pad, side = 1 + len(NAMES), 2, 28
    rows = -(-tiles // SHEET_COLUMNS)
    assert grid.shape == (3, rows * (side + pad) + pad, SHEET_COLUMNS * (side + pad) + pad)
    clean_tile = grid[0, pad : pad + side, pad : pad + side].float() / 255
    assert torch.allclose(clean_tile, image[0], atol=1 / 255)
