"""The 15 MNIST-C corruptions (Mu & Gilmer 2019) for image batches, each at five severities.

``corrupt(images, name, severity, seed)`` takes (N, C, H, W) floats in [0, 1] with any channel count and size and
returns a corrupted copy of the same shape and dtype in [0, 1]. The image operations are torchvision's, SciPy's
and scikit-image's; only what they lack is written here: the drawn overlays (stripe, dotted line, zigzag), the fog
texture, glass blur's pixel jitter and motion blur's streak.

Severity 3 approximates the setting in MNIST-C's own code (the default severity of each of its functions, which
made its released data set); 1-2 are milder and 4-5 harsher, as in ImageNet-C's five levels. Spatial parameters
are given in pixels of a 28x28 image and scale with ``min(H, W) / 28``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from scipy import ndimage
from skimage import color, feature, util
from torchvision.utils import save_image

from decnn_cli.errors import DecnnError
from decnn_cli.results import atomic_file

Corruption = Callable[[torch.Tensor, float, np.random.Generator], torch.Tensor]

SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)
# Severity 3 is closest to MNIST-C's released data set, so a run at the default compares with published MNIST-C
# numbers (canny_edges, which has nothing harsher than MNIST-C's bare edge map, reaches that only at 5).
DEFAULT_SEVERITY = 3
REFERENCE_SIZE = 28
SHEET_COLUMNS = 8
_BILINEAR = TF.InterpolationMode.BILINEAR
_MUD = 63 / 255  # MNIST-C's spatter colour
_ZIGZAG_VERTICES = np.r_[0.0, np.arange(2.0, 23.0, 4.0)]  # MNIST-C's zigzag: 2 px legs, then 4 px between turns
_FOG_EXPONENT = 1.5  # amplitude spectrum 1/f^1.5, about MNIST-C's plasma fractal at wibble decay 1.4


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


def _gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    # SciPy rather than TF.gaussian_blur: many times faster on CPU, and with skimage's edge mode, as in MNIST-C.
    return torch.from_numpy(ndimage.gaussian_filter(x.numpy(), (0, 0, sigma, sigma), mode="nearest"))


def _stroke(vertices: np.ndarray, width: float, height: int, breadth: int) -> np.ndarray:
    """(N, H, W) intensity of one polyline per image through ``vertices`` (N, K, 2) as (column, row).

    MNIST-C's profile ``1 + log(1 - d / width)`` (clipped to [0, 1]) of the distance d to the nearest segment.
    """
    cols = np.arange(breadth, dtype=np.float32)[None, None, :]
    rows = np.arange(height, dtype=np.float32)[None, :, None]
    dist = np.full((len(vertices), height, breadth), np.inf, dtype=np.float32)
    for start, end in zip(vertices[:, :-1].transpose(1, 0, 2), vertices[:, 1:].transpose(1, 0, 2), strict=True):
        c0, r0 = (start[:, i, None, None].astype(np.float32) for i in (0, 1))
        dc, dr = ((end - start)[:, i, None, None].astype(np.float32) for i in (0, 1))
        t = np.clip(((cols - c0) * dc + (rows - r0) * dr) / np.maximum(dc**2 + dr**2, 1e-12), 0.0, 1.0)
        np.minimum(dist, np.hypot(cols - c0 - t * dc, rows - r0 - t * dr), out=dist)
    return np.clip(1.0 + np.log(np.clip(1.0 - dist / width, 1e-12, None)), 0.0, 1.0)


def _add_overlay(x: torch.Tensor, overlay: np.ndarray) -> torch.Tensor:
    return (x + torch.from_numpy(overlay).to(x.dtype)[:, None]).clamp(0.0, 1.0)


def _to_pixels(points: np.ndarray, x: torch.Tensor) -> np.ndarray:
    """Points (..., 2) as (column, row) on MNIST-C's 0..27 grid -> pixel coordinates of ``x``'s H x W grid."""
    height, breadth = x.shape[-2:]
    return points * np.array([(breadth - 1) / (REFERENCE_SIZE - 1), (height - 1) / (REFERENCE_SIZE - 1)])


def _fractal_noise(rng: np.random.Generator, n: int, height: int, breadth: int) -> np.ndarray:
    """(n, H, W) cloud texture in [0, 1]: 1/f noise, made twice the image size and cropped (MNIST-C crops too)."""
    size = 2 * max(height, breadth)
    freq = np.hypot(np.fft.fftfreq(size)[:, None], np.fft.rfftfreq(size)[None, :])
    freq[0, 0] = np.inf
    amplitude = (freq**-_FOG_EXPONENT).astype(np.float32)
    out = np.empty((n, height, breadth), dtype=np.float32)
    for lo in range(0, n, 1024):
        white = rng.standard_normal((min(1024, n - lo), size, size), dtype=np.float32)
        field = np.fft.irfft2(np.fft.rfft2(white) * amplitude, s=(size, size))
        field -= field.min(axis=(1, 2), keepdims=True)
        field /= field.max(axis=(1, 2), keepdims=True)
        out[lo : lo + len(field)] = field[:, :height, :breadth]
    return out


def _shot_noise(x: torch.Tensor, photons: float, rng: np.random.Generator) -> torch.Tensor:
    """Poisson noise: each intensity becomes Poisson(intensity * photons) / photons; fewer photons, more noise."""
    return torch.from_numpy(rng.poisson(x.numpy() * photons) / photons).to(x.dtype)


def _impulse_noise(x: torch.Tensor, amount: float, rng: np.random.Generator) -> torch.Tensor:
    """Salt-and-pepper noise: a fraction ``amount`` of the values set to 0 or 1 (per channel)."""
    return torch.from_numpy(util.random_noise(x.numpy(), mode="s&p", amount=amount, rng=rng)).to(x.dtype)


def _glass_blur(x: torch.Tensor, reach: float, rng: np.random.Generator) -> torch.Tensor:
    """Gaussian blur, two rounds of local pixel jitter by up to ``reach`` px, blur again (sigma 0.5 + 0.2 reach px).

    ImageNet-C swaps pixels one at a time in a Python loop; here each pixel, with probability 1/2, takes the value
    of the pixel a random offset in [-reach, reach] (rounded) away, all pixels at once.
    """
    n, channels, height, breadth = x.shape
    scale = _size_factor(x)
    sigma = (0.5 + 0.2 * reach) * scale
    x = _gaussian_blur(x, sigma)
    rows = torch.arange(height, dtype=torch.int32)[:, None]
    cols = torch.arange(breadth, dtype=torch.int32)[None, :]
    for _ in range(2):
        draw = torch.from_numpy(rng.random((3, n, height, breadth), dtype=np.float32))
        offset = ((draw[1:] * 2 - 1) * (reach * scale)).round_().to(torch.int32) * (draw[0] < 0.5)
        index = (rows + offset[0]).clamp_(0, height - 1) * breadth + (cols + offset[1]).clamp_(0, breadth - 1)
        index = index.view(n, 1, -1).expand(n, channels, -1).long()
        x = x.flatten(2).gather(2, index).view(n, channels, height, breadth)
    return _gaussian_blur(x, sigma)


def _motion_blur(x: torch.Tensor, sigma: float, rng: np.random.Generator) -> torch.Tensor:
    """ImageMagick's motion blur as MNIST-C uses it: a one-sided Gaussian (``sigma`` px) streak at -45..45 degrees.

    The image is averaged with copies of itself shifted by 0..3 sigma along the streak, weighted by the Gaussian.
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


def _shear(x: torch.Tensor, degrees: float, rng: np.random.Generator) -> torch.Tensor:
    """Horizontal shear by ``degrees`` about the centre, in a random direction per image."""
    return _affine_by_sign(x, _signs(rng, len(x)), shear=lambda s: [float(s[0] * degrees), 0.0])


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


def _fog(x: torch.Tensor, strength: float, rng: np.random.Generator) -> torch.Tensor:
    """MNIST-C's fog: ``(x + strength * cloud) * peak / (peak + strength)``, peak the image's maximum."""
    cloud = torch.from_numpy(_fractal_noise(rng, len(x), *x.shape[-2:]))[:, None].to(x.dtype)
    peak = x.amax(dim=(1, 2, 3), keepdim=True)
    return (x + strength * cloud) * peak / (peak + strength)


def _spatter(x: torch.Tensor, coverage: float, rng: np.random.Generator) -> torch.Tensor:
    """Mud blobs: smoothed noise above its ``1 - coverage`` quantile, blurred and cut at 0.8 as in MNIST-C."""
    n, _, height, breadth = x.shape
    scale = _size_factor(x)
    liquid = ndimage.gaussian_filter(rng.standard_normal((n, height, breadth), dtype=np.float32), (0, scale, scale))
    wet = (liquid > np.quantile(liquid, 1.0 - coverage, axis=(1, 2), keepdims=True)).astype(np.float32)
    mud = ndimage.gaussian_filter(wet, (0, 1.5 * scale, 1.5 * scale))
    mud[mud < 0.8] = 0.0
    mud_t = torch.from_numpy(mud)[:, None].to(x.dtype)
    return x * (1.0 - mud_t) + _MUD * mud_t


def _dotted_line(x: torch.Tensor, width: float, rng: np.random.Generator) -> torch.Tensor:
    """A line across the image between random rows, drawn in 2 px dashes; ``width`` sets its thickness."""
    n = len(x)
    ends = np.stack([np.zeros(n), rng.integers(0, 27, n), np.full(n, 27.0), rng.integers(0, 27, n)], axis=1)
    scale = _size_factor(x)
    height, breadth = x.shape[-2:]
    line = _stroke(_to_pixels(ends.reshape(n, 2, 2), x), width * scale, height, breadth)
    dash = max(1, round(2 * scale))
    line[..., (np.arange(breadth) // dash) % 2 == 0] = 0.0
    return _add_overlay(x, line)


def _zigzag(x: torch.Tensor, width: float, rng: np.random.Generator) -> torch.Tensor:
    """MNIST-C's zigzag: 2 px amplitude, from column 2 to 25 at a random row and slope; ``width`` sets thickness."""
    n = len(x)
    c0, c1 = 2.0, 25.0
    r0 = rng.integers(0, 27, n).astype(np.float64)
    tilt = np.arctan((rng.integers(-5, 5, n)) / (c1 - c0))
    along = np.broadcast_to(_ZIGZAG_VERTICES, (n, len(_ZIGZAG_VERTICES)))
    along = np.concatenate([along, ((c1 - c0) / np.cos(tilt))[:, None]], axis=1)
    across = np.zeros_like(along)
    across[:, 1:-1] = 2.0 * (-1.0) ** np.arange(along.shape[1] - 2)
    cos, sin = np.cos(tilt)[:, None], np.sin(tilt)[:, None]
    points = np.stack([c0 + along * cos - across * sin, r0[:, None] + along * sin + across * cos], axis=-1)
    scale = _size_factor(x)
    return _add_overlay(x, _stroke(_to_pixels(points, x), width * scale, *x.shape[-2:]))


def _canny_edges(x: torch.Tensor, weight: float, rng: np.random.Generator) -> torch.Tensor:
    """Canny edge map (scikit-image, per channel), mixed in with ``weight``; at 1 only the edges remain."""
    sigma = _size_factor(x)
    planes = x.numpy().reshape(-1, *x.shape[-2:])
    edges = np.stack([feature.canny(plane, sigma=sigma) for plane in planes]).reshape(x.shape)
    return (1.0 - weight) * x + weight * torch.from_numpy(edges).to(x.dtype)


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

# The parameter each corruption takes at severities 1-5 (pixels are those of a 28x28 image); the third is MNIST-C's.
SEVERITY_PARAMS: dict[str, tuple[float, float, float, float, float]] = {
    "shot_noise": (10.0, 5.0, 3.0, 2.0, 1.0),  # photons per unit intensity
    "impulse_noise": (0.06, 0.11, 0.17, 0.22, 0.27),  # fraction of values hit
    "glass_blur": (0.6, 0.8, 1.0, 2.0, 3.0),  # jitter reach, px (blur sigma 0.5 + 0.2 reach)
    "motion_blur": (1.0, 2.0, 3.0, 4.5, 6.0),  # streak sigma, px
    "shear": (7.0, 14.0, 21.0, 30.0, 40.0),  # degrees (tan 21 = sin 0.4, MNIST-C's 0.4 rad skimage shear)
    "scale": (0.9, 0.8, 0.7, 0.6, 0.5),  # size factor
    "rotate": (8.0, 15.0, 23.0, 32.0, 40.0),  # degrees (MNIST-C: 0.4 rad)
    "brightness": (0.2, 0.35, 0.5, 0.6, 0.7),  # added to HSV value
    "translate": (1.0, 2.0, 3.0, 4.0, 5.0),  # px in each direction
    "stripe": (3.0, 5.0, 7.0, 8.0, 9.0),  # inverted px on each side
    "fog": (1.5, 2.2, 3.0, 4.0, 5.0),  # cloud strength
    "spatter": (0.38, 0.44, 0.5, 0.56, 0.62),  # wet fraction before the 0.8 cut (MNIST-C: about half)
    "dotted_line": (1.2, 1.7, 2.3, 2.9, 3.5),  # stroke profile width, px
    "zigzag": (1.2, 1.7, 2.3, 2.9, 3.5),  # stroke profile width, px
    "canny_edges": (0.2, 0.4, 0.6, 0.8, 1.0),  # weight of the edge map (MNIST-C: 1, reached at severity 5)
}

_USAGE = (
    f"write corrupt:NAME or corrupt:NAME@SEVERITY with NAME 'all' or one of {', '.join(CORRUPTIONS)} "
    f"and SEVERITY one of {', '.join(map(str, SEVERITIES))}"
)


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


def parse_corruption_spec(spec: str) -> list[tuple[str, int]]:
    """``corrupt:NAME[@SEVERITY]`` or ``corrupt:all[@SEVERITY]`` -> [(name, severity), ...] in CORRUPTIONS order.

    'corrupt:fog' -> [('fog', 3)]; 'corrupt:fog@5' -> [('fog', 5)]; 'corrupt:all@2' -> all 15 at severity 2.
    Anything else raises DecnnError saying what to write.
    """
    prefix = "corrupt:"
    if not spec.startswith(prefix):
        raise DecnnError(f"corruption spec {spec!r} does not start with {prefix!r}; {_USAGE}")
    name, at, level = spec[len(prefix) :].partition("@")
    if at and not (level.isascii() and level.isdigit() and int(level) in SEVERITIES):
        raise DecnnError(f"severity {level!r} in {spec!r} is not valid; {_USAGE}")
    severity = int(level) if at else DEFAULT_SEVERITY
    if name == "all":
        return [(each, severity) for each in CORRUPTIONS]
    if name not in CORRUPTIONS:
        raise DecnnError(f"unknown corruption {name!r} in {spec!r}; {_USAGE}")
    return [(name, severity)]


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
