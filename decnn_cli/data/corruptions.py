"""The 15 MNIST-C corruptions (Mu & Gilmer 2019) for image batches, each at five severities.

``corrupt(images, name, severity, seed)`` takes (N, C, H, W) floats in [0, 1] with any channel count and size and
returns a corrupted copy of the same shape and dtype in [0, 1]. The image operations are torchvision's, SciPy's
and scikit-image's; only what they lack is written here, following the released MNIST-C code
(github.com/google-research/mnist-c, ``corruptions.py``): the drawn lines, the plasma-fractal fog, the mud
spatter, glass blur's pixel swaps and motion blur's streak.

Severity 3 is the setting that made MNIST-C's released data set (the default severity of each of its functions);
1-2 are milder and 4-5 harsher, as in ImageNet-C's five levels. Spatial parameters are given in pixels of a 28x28
image and scale with ``min(H, W) / 28``. The random draws come from NumPy's ``Generator``, so for a seed the
images differ from the released files while following the same distribution.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from scipy import ndimage
from skimage import color, feature, transform, util
from torchvision.utils import save_image

from decnn_cli.data.sources import DEFAULT_SEVERITY, SEVERITIES, parse_corruption_spec
from decnn_cli.errors import DecnnError
from decnn_cli.results import atomic_file

Corruption = Callable[[torch.Tensor, Any, np.random.Generator], torch.Tensor]

REFERENCE_SIZE = 28
SHEET_COLUMNS = 8
_BILINEAR = TF.InterpolationMode.BILINEAR
_MUD = 63 / 255  # MNIST-C's spatter colour
_FOG_MAP_SIZE = 256  # side of MNIST-C's plasma fractal, cropped to the image


def _size_factor(x: torch.Tensor) -> float:
    return min(x.shape[-2:]) / REFERENCE_SIZE


def _signs(rng: np.random.Generator, n: int, k: int = 1) -> np.ndarray:
    return rng.choice(np.array([-1, 1]), size=(n, k))


def _affine_by_sign(x: torch.Tensor, signs: np.ndarray, **params: Callable[[np.ndarray], object]) -> torch.Tensor:
    """``TF.affine`` once per group of images sharing a row of ``signs``; ``params`` map that row to an argument."""
    out = torch.empty_like(x)
    for row in np.unique(signs, axis=0):
        idx = torch.from_numpy(np.flatnonzero((signs == row).all(axis=1)))
        args = {"angle": 0.0, "translate": [0.0, 0.0], "scale": 1.0, "shear": [0.0, 0.0]}
        args.update({key: fn(row) for key, fn in params.items()})
        out[idx] = TF.affine(x[idx], **args, interpolation=_BILINEAR, fill=0.0)
    return out


def _line_profile(ends: np.ndarray, width: float, height: int, breadth: int) -> np.ndarray:
    """(N, H, W) MNIST-C's ``line_from_points`` for N lines at once; ``ends`` (N, 2, 2) as (column, row) pixels.

    Intensity ``1 + log(1 - d / width)``, clipped to [0, 1], of the vertical distance d from a pixel to the line
    through the two ends, kept in columns floor(c0) to ceil(c1) - 1 only; a vertical pair (c0 == c1) draws nothing.
    MNIST-C's width is 2.3 px, which lights pixels up to 1.45 px above and below the line.
    """
    c0, r0, c1, r1 = (ends[:, i, j, None, None].astype(np.float64) for i in (0, 1) for j in (0, 1))
    cols = np.arange(breadth, dtype=np.float64)[None, None, :]
    rows = np.arange(height, dtype=np.float64)[None, :, None]
    vertical = c1 == c0
    slope = (r1 - r0) / np.where(vertical, 1.0, c1 - c0)
    dist = np.minimum(np.abs(rows - (slope * (cols - c0) + r0)), width - 1e-10)
    with np.errstate(divide="ignore"):
        line = np.clip(1.0 + np.log(1.0 - dist / width), 0.0, 1.0)
    outside = (cols < np.floor(c0)) | (cols >= np.ceil(c1)) | vertical  # (N, 1, W)
    return np.where(outside, 0.0, line)


def _add_overlay(x: torch.Tensor, overlay: np.ndarray) -> torch.Tensor:
    return (x + torch.from_numpy(overlay).to(x.dtype)[:, None]).clamp(0.0, 1.0)


def _to_pixels(points: np.ndarray, x: torch.Tensor) -> np.ndarray:
    """Points (..., 2) as (column, row) on MNIST-C's 0..27 grid -> pixel coordinates of ``x``'s H x W grid."""
    height, breadth = x.shape[-2:]
    return points * np.array([(breadth - 1) / (REFERENCE_SIZE - 1), (height - 1) / (REFERENCE_SIZE - 1)])


def _plasma_fractal(rng: np.random.Generator, n: int, size: int, decay: float) -> np.ndarray:
    """(n, size, size) diamond-square height maps in [0, 1], as MNIST-C's (and ImageNet-C's) ``plasma_fractal``.

    ``size`` is a power of two. The map wraps around; each square and diamond midpoint is the mean of its four
    corners plus a uniform draw in [-w^2, w^2] (the released code multiplies a U(-w, w) draw by w again), with w
    starting at 100 and divided by ``decay`` at each halving of the step.
    """
    field = np.zeros((n, size, size))
    step, wibble = size, 100.0

    def wibbled_mean(total: np.ndarray) -> np.ndarray:
        return total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)

    while step >= 2:
        half = step // 2
        corners = field[:, ::step, ::step]
        square = corners + np.roll(corners, -1, axis=1)
        square = square + np.roll(square, -1, axis=2)
        field[:, half::step, half::step] = wibbled_mean(square)
        centres, corners = field[:, half::step, half::step], field[:, ::step, ::step]
        across = (centres + np.roll(centres, 1, axis=1)) + (corners + np.roll(corners, -1, axis=2))
        field[:, ::step, half::step] = wibbled_mean(across)
        down = (centres + np.roll(centres, 1, axis=2)) + (corners + np.roll(corners, -1, axis=1))
        field[:, half::step, ::step] = wibbled_mean(down)
        step //= 2
        wibble /= decay
    field -= field.min(axis=(1, 2), keepdims=True)
    return field / field.max(axis=(1, 2), keepdims=True)


def _shot_noise(x: torch.Tensor, photons: float, rng: np.random.Generator) -> torch.Tensor:
    """Poisson noise: each intensity becomes Poisson(intensity * photons) / photons; fewer photons, more noise."""
    return torch.from_numpy(rng.poisson(x.numpy() * photons) / photons).to(x.dtype)


def _impulse_noise(x: torch.Tensor, amount: float, rng: np.random.Generator) -> torch.Tensor:
    """Salt-and-pepper noise: a fraction ``amount`` of the values set to 0 or 1 (per channel)."""
    return torch.from_numpy(util.random_noise(x.numpy(), mode="s&p", amount=amount, rng=rng)).to(x.dtype)


def _vertical_blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of (N, C, H, W) along H only, with scikit-image's edge mode.

    MNIST-C calls ``gaussian(image, sigma, multichannel=True)`` on 2-D images, so scikit-image took the columns
    for channels and blurred along the rows' axis (down the image) only; this keeps that.
    """
    return ndimage.gaussian_filter(x, (0, 0, sigma, 0), mode="nearest", truncate=4.0)


def _local_swaps(x: np.ndarray, reach: int, rounds: int, rng: np.random.Generator) -> np.ndarray:
    """Glass blur's pixel shuffle, in place on (N, C, H, W): ``rounds`` scans of the pixels.

    As MNIST-C (and ImageNet-C) scan them: rows from H - reach down to reach + 1, within each row the columns from
    W - reach down to reach + 1; each pixel, with probability 1/2, swaps places (all channels) with the pixel
    (dy, dx) away, dx and dy uniform integers in [-reach, reach - 1] (NumPy's ``randint(-reach, reach)`` leaves the
    upper end out). A swap moves values and never copies them, so the multiset of values is kept.
    """
    n, _, height, breadth = x.shape
    images = np.arange(n)
    for _ in range(rounds):
        for row in range(height - reach, reach, -1):
            for col in range(breadth - reach, reach, -1):
                moving = images[rng.random(n) < 0.5]
                shift = rng.integers(-reach, reach, size=(2, len(moving)))  # (dx, dy) per moving image
                rows, cols = row + shift[1], col + shift[0]
                here = x[moving, :, row, col]  # (k, C); a copy, advanced indexing
                x[moving, :, row, col] = x[moving, :, rows, cols]
                x[moving, :, rows, cols] = here
    return x


def _glass_blur(x: torch.Tensor, params: tuple[float, int, int], rng: np.random.Generator) -> torch.Tensor:
    """MNIST-C's glass blur with ``(sigma, reach, rounds)``: blur, store as 8 bits, swap pixels, blur again.

    The blur runs down the image only (see ``_vertical_blur``); the 8-bit store truncates, as ``np.uint8`` does.
    """
    sigma, reach, rounds = params
    scale = _size_factor(x)
    sigma_px, reach_px = sigma * scale, max(1, round(reach * scale))
    blurred = np.floor(_vertical_blur(x.numpy().astype(np.float64), sigma_px) * 255.0) / 255.0
    shuffled = _local_swaps(blurred, reach_px, int(rounds), rng)
    return torch.from_numpy(_vertical_blur(shuffled, sigma_px).clip(0.0, 1.0)).to(x.dtype)


def _motion_blur(x: torch.Tensor, sigma: float, rng: np.random.Generator) -> torch.Tensor:
    """An approximation of ImageMagick's motion blur as MNIST-C uses it: a one-sided Gaussian (``sigma`` px) streak
    at -45..45 degrees.

    The image is averaged with copies of itself shifted by 0..3 sigma along the streak, weighted by the Gaussian,
    with bilinear sub-pixel shifts; ImageMagick (radius 10 px in MNIST-C) shifts by whole pixels and MNIST-C stores
    its result as 8-bit PNG, so single pixels differ slightly.
    """
    n = len(x)
    angle = np.deg2rad(rng.uniform(-45.0, 45.0, size=n))
    sigma_px = sigma * _size_factor(x)
    steps = np.arange(math.ceil(3 * sigma_px) + 1, dtype=np.float64)
    weights = np.exp(-(steps**2) / (2 * sigma_px**2))
    weights /= weights.sum()
    height, breadth = x.shape[-2:]
    theta = torch.zeros(n, 2, 3, dtype=x.dtype)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    out = torch.zeros_like(x)
    for step, weight in zip(steps, weights, strict=True):
        # affine_grid works in [-1, 1] coordinates, so a shift of s pixels is 2 s / size.
        theta[:, 0, 2] = torch.from_numpy(2 * step * np.cos(angle) / breadth)
        theta[:, 1, 2] = torch.from_numpy(2 * step * np.sin(angle) / height)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out += weight * F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out


def _shear_matrix(angle: float, height: int, breadth: int) -> np.ndarray:
    """(3, 3) output-to-input pixel map of MNIST-C's shear by ``angle`` radians about the image centre.

    MNIST-C built ``AffineTransform(shear=angle)`` with the scikit-image of its time, whose matrix is
    [[1, -sin a], [0, cos a]] (scikit-image 0.19 and later use [[1, -tan a], [0, 1]] instead), and added the
    translation that keeps the centre (13.5, 13.5) fixed. Used as ``warp``'s inverse map, columns shift by
    sin(a) px per row and the image is stretched down by 1 / cos(a).
    """
    centre = np.array([(breadth - 1) / 2, (height - 1) / 2])  # (x, y) = (column, row)
    linear = np.array([[1.0, -math.sin(angle)], [0.0, math.cos(angle)]])
    matrix = np.eye(3)
    matrix[:2, :2] = linear
    matrix[:2, 2] = centre - linear @ centre
    return matrix


def _shear(x: torch.Tensor, angle: float, rng: np.random.Generator) -> torch.Tensor:
    """MNIST-C's shear by ``angle`` radians (see ``_shear_matrix``), in a random direction per image.

    Each channel goes through ``skimage.transform.warp``: bilinear, 0 outside the image, as released.
    """
    height, breadth = x.shape[-2:]
    signs = _signs(rng, len(x))[:, 0]
    out = np.empty(x.shape, dtype=np.float64)
    maps = {sign: transform.AffineTransform(matrix=_shear_matrix(sign * angle, height, breadth)) for sign in (-1, 1)}
    for i, image in enumerate(x.numpy().astype(np.float64)):
        for c, plane in enumerate(image):
            out[i, c] = transform.warp(plane, maps[int(signs[i])], order=1, mode="constant", cval=0.0)
    return torch.from_numpy(out).to(x.dtype)


def _scale(x: torch.Tensor, factor: float, rng: np.random.Generator) -> torch.Tensor:
    """Zoom out about the centre to ``factor`` of the size."""
    return TF.affine(x, angle=0.0, translate=[0.0, 0.0], scale=factor, shear=[0.0, 0.0], interpolation=_BILINEAR)


def _rotate(x: torch.Tensor, degrees: float, rng: np.random.Generator) -> torch.Tensor:
    """Rotation by ``degrees`` about the centre, in a random direction per image."""
    return _affine_by_sign(x, _signs(rng, len(x)), angle=lambda s: float(s[0] * degrees))


def _brightness(x: torch.Tensor, amount: float, rng: np.random.Generator) -> torch.Tensor:
    """``amount`` added to HSV value (for one channel, as for any count but 3, that is adding it to the image)."""
    if x.shape[1] != 3:
        return x + amount
    hsv = color.rgb2hsv(x.permute(0, 2, 3, 1).numpy())
    hsv[..., 2] = np.clip(hsv[..., 2] + amount, 0.0, 1.0)
    return torch.from_numpy(color.hsv2rgb(hsv)).permute(0, 3, 1, 2).to(x.dtype)


def _translate(x: torch.Tensor, pixels: float, rng: np.random.Generator) -> torch.Tensor:
    """Shift by ``pixels`` both across and down, each in a random direction per image."""
    step = float(max(1, round(pixels * _size_factor(x))))
    return _affine_by_sign(x, _signs(rng, len(x), 2), translate=lambda s: [float(s[0]) * step, float(s[1]) * step])


def _stripe(x: torch.Tensor, pixels: float, rng: np.random.Generator) -> torch.Tensor:
    """Inverted bands ``pixels`` wide along the left and right edges (MNIST-C inverts 7 of 28 columns each side)."""
    width = max(1, round(pixels * _size_factor(x)))
    out = x.clone()
    out[..., :width] = 1.0 - x[..., :width]
    out[..., -width:] = 1.0 - x[..., -width:]
    return out


def _fog(x: torch.Tensor, params: tuple[float, float], rng: np.random.Generator) -> torch.Tensor:
    """MNIST-C's fog with ``(strength, decay)``: ``(x + strength * cloud) * peak / (peak + strength)``.

    ``cloud`` is the top-left H x W corner of a 256 x 256 plasma fractal (``_plasma_fractal``, wibble decay
    ``decay``; a larger power of two for images over 256 px), one per image and shared by its channels; ``peak``
    is the image's maximum.
    """
    strength, decay = params
    n, _, height, breadth = x.shape
    size = max(_FOG_MAP_SIZE, 1 << (max(height, breadth) - 1).bit_length())
    cloud = np.empty((n, height, breadth))
    for lo in range(0, n, 64):  # 64 maps of 256 x 256 doubles at a time: 32 MiB
        cloud[lo : lo + 64] = _plasma_fractal(rng, min(64, n - lo), size, decay)[:, :height, :breadth]
    peak = x.amax(dim=(1, 2, 3), keepdim=True).double()
    fogged = (x.double() + strength * torch.from_numpy(cloud)[:, None]) * peak / (peak + strength)
    return fogged.to(x.dtype)


def _spatter(
    x: torch.Tensor, params: tuple[float, float, float, float, float], rng: np.random.Generator
) -> torch.Tensor:
    """MNIST-C's mud spatter with ``(mean, spread, sigma, level, mud_sigma)``.

    A liquid layer of Gaussian noise N(mean, spread^2) per pixel is blurred (``sigma`` px); where it exceeds
    ``level`` it is wet. The wet mask, blurred (``mud_sigma`` px) and cut to 0 below 0.8, is the mud's opacity m:
    ``x (1 - m) + 63/255 m``. One layer per image, shared by its channels.
    """
    mean, spread, sigma, level, mud_sigma = params
    n, _, height, breadth = x.shape
    scale = _size_factor(x)
    liquid = rng.normal(mean, spread, size=(n, height, breadth))
    liquid = ndimage.gaussian_filter(liquid, (0, sigma * scale, sigma * scale), mode="nearest")
    wet = (liquid > level).astype(np.float32)
    mud = ndimage.gaussian_filter(wet, (0, mud_sigma * scale, mud_sigma * scale), mode="nearest")
    mud[mud < 0.8] = 0.0
    mud_t = torch.from_numpy(mud)[:, None].to(x.dtype)
    return x * (1.0 - mud_t) + _MUD * mud_t


def _dotted_line(x: torch.Tensor, width: float, rng: np.random.Generator) -> torch.Tensor:
    """MNIST-C's dotted line: a line from column 0 to 27 between two random rows in 0..26 (``_line_profile``,
    ``width`` 2.3 px at severity 3), shown only in columns 2-3, 6-7, ..., 26 (the released 2 px dashes)."""
    n = len(x)
    height, breadth = x.shape[-2:]
    rows = rng.integers(0, 27, size=(n, 2))
    ends = np.stack([np.stack([np.zeros(n), rows[:, 0]], 1), np.stack([np.full(n, 27.0), rows[:, 1]], 1)], 1)
    scale = _size_factor(x)
    line = _line_profile(_to_pixels(ends, x), width * scale, height, breadth)
    dash = max(1, round(2 * scale))
    line[..., (np.arange(breadth) // dash) % 2 == 0] = 0.0
    return _add_overlay(x, line)


def _zigzag_vertices(row: float, rise: float) -> np.ndarray:
    """(K, 2) turning points, as (column, row) on the 28 x 28 grid, of MNIST-C's zigzag from (2, row) towards
    (25, row + rise).

    Along the straight line of length d, the turns sit at 2, 6, 10, ... px, alternately 2 px to one side and the
    other; the last point is at d, off the line by the last turn's offset / (2 (d - 4 floor(d / 4))), as released.
    """
    c0, c1, leg, amplitude = 2.0, 25.0, 2.0, 2.0
    tilt = math.atan(rise / (c1 - c0))
    length = (c1 - c0) / math.cos(tilt)
    turns = int((length - leg) // (2 * leg)) + 1
    points = [(0.0, 0.0)] + [((2 * i + 1) * leg, (-1.0) ** i * amplitude) for i in range(turns)]
    last_turn = 2 * leg * (length // (2 * leg))
    if length != last_turn:
        points.append((length, points[-1][1] / (2 * (length - last_turn))))
    along, across = np.array(points).T
    cos, sin = math.cos(tilt), math.sin(tilt)
    return np.stack([c0 + along * cos - across * sin, row + along * sin + across * cos], axis=1)


def _zigzag(x: torch.Tensor, width: float, rng: np.random.Generator) -> torch.Tensor:
    """MNIST-C's zigzag (``_zigzag_vertices``): each leg drawn as ``_line_profile`` (``width`` 2.3 px at severity
    3) between its ends' columns, the legs added up; the starting row is random in 0..26, the rise in -5..4."""
    n = len(x)
    height, breadth = x.shape[-2:]
    rows, rises = rng.integers(0, 27, n), rng.integers(-5, 5, n)
    width_px = width * _size_factor(x)
    overlay = np.zeros((n, height, breadth))
    for i in range(n):
        points = _to_pixels(_zigzag_vertices(float(rows[i]), float(rises[i])), x)
        legs = np.stack([points[:-1], points[1:]], axis=1)  # (K - 1, 2, 2)
        overlay[i] = _line_profile(legs, width_px, height, breadth).sum(axis=0)
    return _add_overlay(x, overlay)


def _canny_edges(x: torch.Tensor, sigma: float, rng: np.random.Generator) -> torch.Tensor:
    """The Canny edge map itself (``skimage.feature.canny`` per channel, default thresholds): 1 on edges, else 0.

    MNIST-C uses scikit-image's default detector smoothing, sigma 1 px (severity 3); the other severities change
    only that sigma, and a smoother detector keeps less of the shape.
    """
    planes = x.numpy().reshape(-1, *x.shape[-2:])
    edges = np.stack([feature.canny(plane, sigma=sigma * _size_factor(x)) for plane in planes]).reshape(x.shape)
    return torch.from_numpy(edges).to(x.dtype)


CORRUPTIONS: dict[str, Corruption] = {
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "glass_blur": _glass_blur,
    "motion_blur": _motion_blur,
    "shear": _shear,
    "scale": _scale,
    "rotate": _rotate,
    "brightness": _brightness,
    "translate": _translate,
    "stripe": _stripe,
    "fog": _fog,
    "spatter": _spatter,
    "dotted_line": _dotted_line,
    "zigzag": _zigzag,
    "canny_edges": _canny_edges,
}

# The parameters of each corruption at severities 1-5 (pixels are those of a 28x28 image). The third is the setting
# MNIST-C's released data set was made with; where MNIST-C has five levels of its own, they are reused around it.
SEVERITY_PARAMS: dict[str, tuple[Any, Any, Any, Any, Any]] = {
    "shot_noise": (10.0, 5.0, 3.0, 2.0, 1.0),  # photons per unit intensity
    "impulse_noise": (0.06, 0.11, 0.17, 0.22, 0.27),  # fraction of values hit
    # (blur sigma px, swap reach px, rounds); MNIST-C's own levels 1-3 at 3-5
    "glass_blur": ((0.6, 1, 1), (0.7, 1, 1), (0.7, 1, 2), (0.9, 2, 1), (1.0, 2, 3)),
    "motion_blur": (1.0, 2.0, 3.0, 4.5, 6.0),  # streak sigma, px
    "shear": (0.2, 0.3, 0.4, 0.6, 0.8),  # radians (MNIST-C's own levels 1, -, 2, 3, 4)
    "scale": (0.9, 0.8, 0.7, 0.6, 0.5),  # size factor
    "rotate": (8.0, 15.0, math.degrees(0.4), 32.0, 40.0),  # degrees (MNIST-C: 0.4 rad)
    "brightness": (0.2, 0.35, 0.5, 0.6, 0.7),  # added to HSV value
    "translate": (1.0, 2.0, 3.0, 4.0, 5.0),  # px in each direction
    "stripe": (3.0, 5.0, 7.0, 8.0, 9.0),  # inverted px on each side
    # (strength, wibble decay); MNIST-C's own levels 1, 2 and 5 at 1-3, then stronger
    "fog": ((1.5, 2.0), (2.0, 2.0), (3.0, 1.4), (4.0, 1.4), (5.0, 1.4)),
    # (noise mean, noise spread, blur sigma px, wet level, mud blur sigma px); MNIST-C's own levels 4-5 at 3-4.
    # Its levels 1-3 (ImageNet-C's water, which MNIST-C draws as mud) leave an MNIST digit almost untouched, so the
    # milder levels here lower the noise mean instead, wetting less.
    "spatter": (
        (0.60, 0.3, 1.0, 0.65, 1.5),
        (0.62, 0.3, 1.0, 0.65, 1.5),
        (0.65, 0.3, 1.0, 0.65, 1.5),
        (0.67, 0.4, 1.0, 0.65, 1.5),
        (0.70, 0.45, 1.0, 0.65, 1.5),
    ),
    "dotted_line": (1.2, 1.7, 2.3, 2.9, 3.5),  # line profile width, px
    "zigzag": (1.2, 1.7, 2.3, 2.9, 3.5),  # line profile width, px
    "canny_edges": (0.5, 0.75, 1.0, 1.5, 2.0),  # the detector's smoothing sigma, px (MNIST-C: the default 1)
}


def _check(name: str, severity: int) -> None:
    if name not in CORRUPTIONS:
        raise DecnnError(f"unknown corruption {name!r}; pick one of {', '.join(CORRUPTIONS)}")
    if isinstance(severity, bool) or not isinstance(severity, int | np.integer) or severity not in SEVERITIES:
        raise DecnnError(f"severity {severity!r} is out of range; pick one of {', '.join(map(str, SEVERITIES))}")


def corrupt(images: torch.Tensor, name: str, severity: int = DEFAULT_SEVERITY, seed: int = 0) -> torch.Tensor:
    """MNIST-C corruption ``name`` at ``severity`` (1-5) of ``images``, reproducible for a ``seed``.

    ``images``: (N, C, H, W) floats in [0, 1], any C, H and W, on any device. Returns a new tensor of the same
    shape, dtype and device, in [0, 1]. An unknown name or severity raises DecnnError listing the valid ones.
    """
    _check(name, severity)
    if not (isinstance(images, torch.Tensor) and images.ndim == 4 and images.is_floating_point()):
        raise DecnnError("pass the images as one float tensor of shape (N, C, H, W) with values in [0, 1]")
    if len(images) == 0:
        return images.clone()
    x = images.detach().to("cpu", torch.float32)
    out = CORRUPTIONS[name](x, SEVERITY_PARAMS[name][severity - 1], np.random.default_rng(seed))
    return out.clamp(0.0, 1.0).to(images.device, images.dtype)


def corruption_sheet(image: torch.Tensor, path: Path, severity: int = DEFAULT_SEVERITY) -> None:
    """Save a PNG grid of ``image`` (C, H, W) in [0, 1], clean and then under each corruption, 8 per row.

    16 tiles in CORRUPTIONS order after the clean one, seed 0, 2 px white gaps; written to a temporary file in the
    same folder and renamed, so a reader never sees half a PNG.
    """
    if image.ndim == 4 and len(image) == 1:
        image = image[0]
    if image.ndim != 3:
        raise DecnnError("pass corruption_sheet one image of shape (C, H, W) with values in [0, 1]")
    clean = image.detach().to("cpu", torch.float32)[None]
    tiles = torch.cat([clean, *(corrupt(clean, name, severity) for name in CORRUPTIONS)])
    with atomic_file(Path(path)) as handle:
        save_image(tiles, handle, nrow=SHEET_COLUMNS, padding=2, pad_value=1.0, format="png")


__all__ = [
    "CORRUPTIONS",
    "DEFAULT_SEVERITY",
    "SEVERITIES",
    "SEVERITY_PARAMS",
    "corrupt",
    "corruption_sheet",
    "parse_corruption_spec",
]
