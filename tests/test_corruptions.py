from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage import feature
from torchvision.io import decode_image, read_file

from decnn_cli.data.corruptions import (
    CORRUPTIONS,
    DEFAULT_SEVERITY,
    SEVERITIES,
    SEVERITY_PARAMS,
    SHEET_COLUMNS,
    _line_profile,
    _local_swaps,
    _plasma_fractal,
    _shear_matrix,
    _vertical_blur,
    _zigzag_vertices,
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


# --- the released MNIST-C algorithm, pinned -----------------------------------------------------------------------


def test_severity_3_is_the_setting_of_the_released_mnist_c_data_set():
    released = {
        "shot_noise": 3.0,
        "impulse_noise": 0.17,
        "glass_blur": (0.7, 1, 2),
        "shear": 0.4,
        "scale": 0.7,
        "rotate": math.degrees(0.4),
        "brightness": 0.5,
        "translate": 3.0,
        "stripe": 7.0,
        "fog": (3.0, 1.4),
        "spatter": (0.65, 0.3, 1.0, 0.65, 1.5),
        "dotted_line": 2.3,
        "zigzag": 2.3,
        "canny_edges": 1.0,
    }
    assert {name: SEVERITY_PARAMS[name][DEFAULT_SEVERITY - 1] for name in released} == released


def test_canny_edges_is_the_binary_edge_map_of_scikit_image():
    x = digits_like()
    y = corrupt(x, "canny_edges")
    assert set(torch.unique(y).tolist()) == {0.0, 1.0}
    expected = np.stack([feature.canny(image[0].numpy(), sigma=1.0) for image in x])
    assert torch.equal(y[:, 0], torch.from_numpy(expected).float())


def test_glass_blur_swaps_pixels_without_copying_any():
    rng = np.random.default_rng(0)
    x = rng.random((3, 2, 28, 28))
    swapped = _local_swaps(x.copy(), reach=2, rounds=2, rng=np.random.default_rng(1))
    assert not np.array_equal(swapped, x)
    for image, before in zip(swapped, x, strict=True):  # the same values, only moved (both channels together)
        assert np.array_equal(np.sort(image.reshape(2, -1), axis=1), np.sort(before.reshape(2, -1), axis=1))
    assert np.array_equal(swapped[:, 0] - x[:, 0] == 0, swapped[:, 1] - x[:, 1] == 0), "a pixel moves whole"
    edge = 2  # rows and columns scanned are reach + 1 .. 28 - reach; a swap reaches reach below and reach - 1 above
    assert np.array_equal(swapped[:, :, : edge - 1], x[:, :, : edge - 1])
    assert np.array_equal(swapped[:, :, :, : edge - 1], x[:, :, :, : edge - 1])


def test_glass_blur_blurs_down_the_image_only_as_the_released_code_does():
    dot = np.zeros((1, 1, 28, 28))
    dot[0, 0, 14, 14] = 1.0
    blurred = _vertical_blur(dot, 0.7)[0, 0]
    assert blurred[:, 14].sum() == pytest.approx(1.0) and blurred[13, 14] > 0.1
    assert np.array_equal(np.flatnonzero(blurred.sum(axis=0)), [14])


def _vertical_bar() -> torch.Tensor:
    x = torch.zeros(1, 1, 28, 28)
    x[0, 0, 4:24, 13:15] = 1.0  # 2 px wide, 20 tall, centred on (13.5, 13.5)
    return x


def test_shear_has_the_released_geometry_slope_sin_a_and_height_over_cos_a():
    x = _vertical_bar()
    y = corrupt(x, "shear", seed=0)[0, 0].double()
    angle = SEVERITY_PARAMS["shear"][DEFAULT_SEVERITY - 1]
    # scikit-image 0.14's AffineTransform(shear=a) as the output -> input map: the bar is 1 / cos(a) taller...
    assert float(y.sum()) == pytest.approx(40 / math.cos(angle), rel=0.01)
    # ... and leans by sin(a) columns per row (not tan(a)), about the centre
    rows = torch.arange(6, 22)
    cols = torch.arange(28, dtype=torch.float64)
    centroid = (y[rows] * cols).sum(1) / y[rows].sum(1)
    slope = np.polyfit(rows.numpy(), centroid.numpy(), 1)
    assert abs(slope[0]) == pytest.approx(math.sin(angle), abs=1e-6)
    assert slope[0] * 13.5 + slope[1] == pytest.approx(13.5, abs=1e-6)


def test_shear_matrix_is_the_released_one():
    for angle in (0.4, -0.4):
        released = [
            [1.0, -math.sin(angle), 13.5 * math.sin(angle)],
            [0.0, math.cos(angle), 13.5 * (1 - math.cos(angle))],
            [0.0, 0.0, 1.0],
        ]
        assert np.allclose(_shear_matrix(angle, 28, 28), released, atol=1e-12)


def test_line_profile_is_released_line_from_points():
    horizontal = _line_profile(np.array([[[0.0, 10.0], [27.0, 10.0]]]), 2.3, 28, 28)[0]
    beside = 1 + math.log(1 - 1 / 2.3)  # one row off the line: 0.429
    assert np.allclose(horizontal[9:12, :27].T, [beside, 1.0, beside])
    assert horizontal[:9].sum() == 0 and horizontal[12:].sum() == 0
    assert horizontal[:, 27].sum() == 0, "columns from ceil(c1) on are dark"
    steep = _line_profile(np.array([[[5.0, 2.0], [15.0, 22.0]]]), 2.3, 28, 28)[0]  # slope 2: still 3 rows a column
    assert np.count_nonzero(steep, axis=0).max() == 3
    assert steep[:, :5].sum() == 0 and steep[:, 15:].sum() == 0
    assert _line_profile(np.array([[[4.0, 0.0], [4.0, 27.0]]]), 2.3, 28, 28).sum() == 0, "vertical: nothing"


def test_dotted_line_is_lit_in_the_released_columns_at_most_three_rows_deep():
    y = corrupt(torch.zeros(64, 1, 28, 28), "dotted_line", seed=0)[:, 0]
    lit = (y > 0).any(dim=1)  # (N, W)
    released_columns = [c for c in range(28) if (c // 2) % 2 == 1 and c < 27]  # 2, 3, 6, 7, ..., 26
    assert torch.equal(lit.any(0).nonzero().flatten(), torch.tensor(released_columns))
    assert int((y > 0).sum(dim=1).max()) <= 3


def test_zigzag_turning_points_are_the_released_ones():
    points = _zigzag_vertices(10.0, 0.0)  # flat: 23 px long, turns at 2, 6, ..., 22 along it
    expected = [(2, 10), (4, 12), (8, 8), (12, 12), (16, 8), (20, 12), (24, 8), (25, 10 - 2 / (2 * 3))]
    assert np.allclose(points, expected)
    tilted = _zigzag_vertices(10.0, 4.0)
    assert np.allclose(tilted[0], (2, 10))
    line = np.arctan2(tilted[-1, 1] - 10, tilted[-1, 0] - 2)
    assert line == pytest.approx(math.atan(4 / 23), abs=0.02)


def test_plasma_fractal_is_a_smooth_map_in_zero_one():
    maps = _plasma_fractal(np.random.default_rng(0), 3, 256, 1.4)
    assert maps.shape == (3, 256, 256)
    assert np.allclose(maps.min(axis=(1, 2)), 0.0) and np.allclose(maps.max(axis=(1, 2)), 1.0)
    step = np.abs(np.diff(maps, axis=2)).mean()
    assert step < 0.02, "neighbours are close: a cloud, not white noise"
    assert not np.allclose(maps[0], maps[1])


def test_fog_adds_a_cloud_and_rescales_by_the_peak():
    x = digits_like()
    strength = SEVERITY_PARAMS["fog"][DEFAULT_SEVERITY - 1][0]
    y = corrupt(x, "fog", seed=0).double()
    peak = x.amax(dim=(1, 2, 3), keepdim=True).double()
    cloud = (y * (peak + strength) / peak - x.double()) / strength
    assert float(cloud.min()) >= -1e-5 and float(cloud.max()) <= 1 + 1e-5
    assert float(cloud.std()) > 0.05


def test_spatter_is_mud_of_the_released_colour_and_opacity():
    y = corrupt(torch.zeros(32, 1, 28, 28), "spatter", seed=0)
    mud = y[y > 0]
    assert len(mud) > 0
    assert float(mud.min()) >= 0.8 * 63 / 255 - 1e-6 and float(mud.max()) <= 63 / 255 + 1e-6
