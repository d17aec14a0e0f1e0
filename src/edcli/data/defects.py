"""The defect library: the defects the demo and `--select validation` inject (scratch, hole, stain, patch, lens
distortion; blur, noise, erase), their shapes and blends, each returned with an exact mask of the changed pixels.

Every defect keeps MARGIN of the side away from every border and draws from the generator it is given, in a fixed
order, so the same generator state gives the same defect bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.spatial import cKDTree

from edcli.errors import ConfigError, DataError

DEFECT_KINDS = ("scratch", "hole", "stain", "patch", "distortion")
# Made only for `ed train --select validation` (synthetic defects in held-out normal train images): the demo's
# test split never uses them, so choosing an epoch with them does not tune it to the demo's own test defects.
VALIDATION_KINDS = ("blur", "noise", "erase")
MARGIN = 0.1  # defects stay this fraction of the side away from every border
MIN_CHANGE = 6  # grey levels: blended defects keep only changes at least this large, so masks mark visible change
MIN_SIZE = 32  # px: the smallest image side every defect fits in with its margins
# Tints for colour stains; each spans >= 80 grey levels over its channels, so it visibly moves any grey pixel.
STAIN_COLOURS = ((160, 82, 45), (70, 100, 180), (205, 175, 70), (80, 140, 60), (130, 60, 140))
PATCH_ZOOM = (2.0, 2.6)  # magnification of a pasted patch: a same-size copy of a random texture is invisible
# Share of a distortion's radius that is scaled uniformly; pinch needs inner * 2.6 < 1 to stay increasing.
LENS_INNER_BULGE, LENS_INNER_PINCH = 0.6, 0.35


def make_defect(
    kind: str, image: np.ndarray, rng: np.random.Generator, source: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Inject one defect into a (S, S, 3) uint8 image; return (defective image, bool (S, S) mask).

    The mask is exactly the pixels that differ: mask == (defective != image).any(-1). `source` (any (H, W, 3)
    uint8 picture of the same material, e.g. the training region of the photo) is where a "patch" is cut from;
    without it the patch comes from a part of `image` that does not overlap the place it is pasted to.
    """
    defective, _ = _defect(kind, image, rng, source)
    return defective, (defective != image).any(axis=-1)


def _defect(
    kind: str, image: np.ndarray, rng: np.random.Generator, source: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """(defective image, intended core region): the core is where the defect is meant to be strong."""
    if kind not in _DEFECTS:
        raise ConfigError(f"unknown defect kind {kind!r}: choose one of {', '.join(_DEFECTS)}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.shape[0] != image.shape[1]:
        raise DataError(f"make_defect needs a square (S, S, 3) uint8 image, got {image.shape} {image.dtype}")
    if image.shape[0] < MIN_SIZE:
        raise DataError(f"make_defect needs an image of at least {MIN_SIZE} px, got {image.shape[0]}")
    if kind == "patch":
        return _patch(image, rng, source)
    return _DEFECTS[kind](image, rng)


def _place(rng: np.random.Generator, S: int, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """A random (y, x) centre such that centre + [lo, hi] (the defect's reach) keeps MARGIN from every border."""
    m = math.ceil(MARGIN * S)
    first, last = m - lo, S - 1 - m - hi
    if np.any(last < first):  # cannot happen with the sizes below; a guard against future edits
        raise ConfigError(f"a defect of reach {lo}..{hi} does not fit in a {S} px image with its margin")
    return rng.uniform(first, last)


def _grid(S: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)  # (S, S) each
    return yy, xx


def _blend(image: np.ndarray, target: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """image + alpha * (target - image), keeping only pixels that move by at least MIN_CHANGE grey levels."""
    img = image.astype(np.float32)
    out = np.clip(np.rint(img + alpha[..., None] * (target - img)), 0, 255)
    visible = np.abs(out - img).max(axis=-1) >= MIN_CHANGE  # (S, S)
    return np.where(visible[..., None], out, img).astype(np.uint8)


def _scratch(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A thin (3-5 px at <= 256) quadratic-Bezier line, far lighter or darker than what it crosses (thinner or
    fainter lines look like grass blades or gravel edges: not a visible defect on those textures)."""
    S = image.shape[0]
    width = rng.uniform(3.0, 5.0) * max(1.0, S / 256)
    reach = width / 2 + 1.5  # alpha > 0 needs a distance below width / 2 + 0.5
    # At small sizes the line's width is a large share: shorten it so it still fits inside the margins.
    length = min(rng.uniform(0.35, 0.55) * S, S - 2 * math.ceil(MARGIN * S) - 2 * reach - 2)
    phi = rng.uniform(0.0, math.pi)
    bend = rng.uniform(-0.2, 0.2) * length
    lighter = bool(rng.random() < 0.5)
    strength = rng.uniform(0.8, 0.95)
    d = np.array([math.sin(phi), math.cos(phi)])  # (y, x) direction
    n = np.array([d[1], -d[0]])  # its normal
    t = np.linspace(0.0, 1.0, int(4 * length) + 2)[:, None]  # (N, 1): 4 samples per pixel of length
    curve = (1 - t) ** 2 * (-length / 2 * d) + 2 * t * (1 - t) * (bend * n) + t**2 * (length / 2 * d)  # (N, 2)
    centre = _place(rng, S, curve.min(0) - reach, curve.max(0) + reach)
    pts = curve + centre
    yy, xx = _grid(S)
    # Only distances below the line's reach matter; the bound makes far pixels cheap (they come back as inf).
    dist, _ = cKDTree(pts).query(np.stack([yy.ravel(), xx.ravel()], axis=1), distance_upper_bound=reach)
    dist = dist.reshape(S, S).astype(np.float32)
    alpha = np.clip(width / 2 + 0.5 - dist, 0.0, 1.0)  # 1 inside, a one-pixel linear edge
    img = image.astype(np.float32)
    target = img + (255 - img) * strength if lighter else img * (1 - strength)
    return _blend(image, target, alpha), dist <= max(0.5, width / 2 - 0.5)


def _hole(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A near-black ellipse with a wobbly outline and a soft one-pixel edge: a hole (darker and larger than the
    shadows between grass blades or stones)."""
    S = image.shape[0]
    a = rng.uniform(0.07, 0.1) * S
    b = a * rng.uniform(0.6, 1.0)
    theta = rng.uniform(0.0, math.pi)
    amps = rng.uniform(0.0, 0.08, 3)  # outline wobble: harmonics 2, 3, 4
    phases = rng.uniform(0.0, 2 * math.pi, 3)
    dark = rng.uniform(0.03, 0.12)
    reach = a * (1 + amps.sum()) + 5  # + the Gaussian edge
    centre = _place(rng, S, np.full(2, -reach), np.full(2, reach))
    yy, xx = _grid(S)
    dy, dx = yy - centre[0], xx - centre[1]
    u = (dx * math.cos(theta) + dy * math.sin(theta)) / a
    v = (-dx * math.sin(theta) + dy * math.cos(theta)) / b
    ang = np.arctan2(v, u)
    outline = 1 + sum(amp * np.cos(k * ang + ph) for k, amp, ph in zip((2, 3, 4), amps, phases))
    inside = np.hypot(u, v) < outline
    alpha = ndimage.gaussian_filter(inside.astype(np.float32), sigma=1.0, mode="constant")
    return _blend(image, image.astype(np.float32) * dark, alpha), alpha >= 0.5


def _disc_union(rng: np.random.Generator, S: int) -> tuple[float, np.ndarray, np.ndarray, float]:
    """(r0, disc offsets, disc radii, blur sigma) of a blob of radius 6-9 % of the side; the draws in this order."""
    r0 = rng.uniform(0.06, 0.09) * S
    k = int(rng.integers(3, 6))
    offsets = rng.uniform(-0.6, 0.6, (k, 2)) * r0
    radii = rng.uniform(0.5, 0.9, k) * r0
    return r0, offsets, radii, 0.3 * r0


def _stain(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A smooth irregular blob (blurred union of discs) tinted toward a colour or made darker/brighter."""
    S = image.shape[0]
    r0, offsets, radii, sigma = _disc_union(rng, S)
    mode = int(rng.integers(0, 3))  # 0, 1: colour tint; 2: brightness
    colour = np.array(STAIN_COLOURS[int(rng.integers(0, len(STAIN_COLOURS)))], np.float32)
    tint = rng.uniform(0.35, 0.55)
    factor = rng.uniform(0.55, 0.7) if rng.random() < 0.5 else rng.uniform(1.35, 1.6)
    reach = float((np.hypot(*offsets.T) + radii).max() + 1.5 * sigma)  # alpha > 0 needs field > 0.3
    centre = _place(rng, S, np.full(2, -reach), np.full(2, reach))
    yy, xx = _grid(S)
    union = np.zeros((S, S), bool)
    for (oy, ox), r in zip(offsets, radii):
        union |= np.hypot(yy - centre[0] - oy, xx - centre[1] - ox) < r
    field = ndimage.gaussian_filter(union.astype(np.float32), sigma=sigma, mode="constant")
    alpha = np.clip((field - 0.3) / 0.4, 0.0, 1.0)  # smooth outline, soft edge
    img = image.astype(np.float32)
    if mode < 2:
        target = img + tint * (colour - img)
    else:
        target = img * factor
    return _blend(image, target, alpha), field >= 0.5


def _zoom_turn(region: np.ndarray, k: int, h: int, w: int) -> np.ndarray:
    """A (h', w', 3) uint8 region turned by k quarter turns (np.rot90), then resized to (h, w) with bicubic."""
    turned = np.ascontiguousarray(np.rot90(region, k))
    return np.asarray(Image.fromarray(turned).resize((w, h), Image.Resampling.BICUBIC))


def _patch(image: np.ndarray, rng: np.random.Generator, source: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """A rectangle cut from elsewhere, turned by a quarter turn and magnified x1.8-2.5, pasted with a hard edge.

    A plain copy of a stationary texture (gravel) is invisible: magnified, its grains are twice the size of their
    neighbours, and turned, an oriented texture (grass, brick) runs across. The pasted block is
    `_zoom_turn(src[sy:sy + sh, sx:sx + sw], k, h, w)` with k in (1, 3) and (sw, sh) ~ (h, w) / zoom.
    """
    S = image.shape[0]
    h = max(4, int(rng.uniform(0.2, 0.28) * S))
    w = max(4, int(rng.uniform(0.2, 0.28) * S))
    m = math.ceil(MARGIN * S)
    y0 = int(rng.integers(m, S - m - h + 1))
    x0 = int(rng.integers(m, S - m - w + 1))
    zoom = rng.uniform(*PATCH_ZOOM)
    k = 1 if rng.random() < 0.5 else 3  # a quarter turn either way
    # The window is cut before the turn, which swaps its axes: (sh, sw) becomes (sw, sh) ~ (h, w) / zoom.
    sh, sw = max(2, round(w / zoom)), max(2, round(h / zoom))
    if source is None:
        src = image
        # Rows that do not overlap the pasted rectangle: below it when it sits in the top half, else above.
        if y0 + h / 2 < S / 2:
            sy = int(rng.integers(y0 + h, S - sh + 1))
        else:
            sy = int(rng.integers(0, y0 - sh + 1))
    else:
        src = np.asarray(source)
        if src.dtype != np.uint8 or src.ndim != 3 or src.shape[2] != 3 or src.shape[0] < sh or src.shape[1] < sw:
            raise DataError(
                f"patch source must be a (H, W, 3) uint8 picture of at least {sh}x{sw}, got {src.shape} {src.dtype}"
            )
        sy = int(rng.integers(0, src.shape[0] - sh + 1))
    sx = int(rng.integers(0, src.shape[1] - sw + 1))
    out = image.copy()
    out[y0 : y0 + h, x0 : x0 + w] = _zoom_turn(src[sy : sy + sh, sx : sx + sw], k, h, w)
    core = np.zeros((S, S), bool)
    core[y0 : y0 + h, x0 : x0 + w] = True
    return out, core


def _lens_radius(rho: np.ndarray, radius: float, scale: float) -> np.ndarray:
    """Source radius for each output radius: rho / scale inside the inner disc, a linear ramp back to the identity
    at `radius`, rho itself beyond. Continuous and increasing, so the lens folds nothing over."""
    inner = radius * (LENS_INNER_BULGE if scale > 1 else LENS_INNER_PINCH)
    at_inner = inner / scale
    ramp = at_inner + (rho - inner) * (radius - at_inner) / (radius - inner)
    return np.where(rho < inner, rho / scale, np.where(rho < radius, ramp, rho))


def _distortion(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A lens on a disc of radius 15-19 % of the side: the texture in its inner disc magnified x2.4-3 (bulge)
    or shrunk by 2.2-2.6 (pinch), squeezed or stretched in the ring around it; identity outside the disc.

    The disc goes to the most structured of a few random places (largest mean gradient), because moving a flat
    area changes nothing. Like a patch, every changed pixel counts: the content there is not what was there.
    """
    S = image.shape[0]
    radius = rng.uniform(0.15, 0.19) * S
    bulge = bool(rng.random() < 0.5)
    scale = rng.uniform(2.4, 3.0) if bulge else 1 / rng.uniform(2.2, 2.6)  # > 1 magnifies
    candidates = np.stack([_place(rng, S, np.full(2, -radius - 1), np.full(2, radius + 1)) for _ in range(6)])
    img = image.astype(np.float32)
    grey = img.mean(axis=-1)
    grad = np.hypot(ndimage.sobel(grey, axis=0), ndimage.sobel(grey, axis=1))
    local = ndimage.uniform_filter(grad, size=max(3, int(radius)))  # (S, S) mean gradient around each pixel
    centre = candidates[int(np.argmax([local[int(cy), int(cx)] for cy, cx in candidates]))]
    yy, xx = _grid(S)
    dy, dx = yy - centre[0], xx - centre[1]
    rho = np.hypot(dy, dx)
    inside = rho < radius
    src_rho = _lens_radius(rho, radius, scale)
    # Radial map: the source point lies on the same ray at radius src_rho (factor 1 / scale at the very centre).
    f = np.divide(src_rho, rho, out=np.full_like(rho, 1 / scale), where=rho > 0)
    coords = np.stack([(centre[0] + dy * f)[inside], (centre[1] + dx * f)[inside]])  # (2, P): only the disc moves
    out = img.copy()
    for c in range(3):
        out[..., c][inside] = ndimage.map_coordinates(img[..., c], coords, order=3, mode="reflect")
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    return out, inside & (np.abs(rho - src_rho) >= 1.0)


def _blob(rng: np.random.Generator, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(alpha, core) of a smooth irregular blob of radius 6-9 % of the side (a blurred union of discs): the shape
    of the validation kinds below. It goes to the most structured of a few random places inside the margins, as a
    distortion does: blurring or erasing a flat brick face changes nothing."""
    S = image.shape[0]
    r0, offsets, radii, sigma = _disc_union(rng, S)
    reach = float((np.hypot(*offsets.T) + radii).max() + 1.5 * sigma)  # alpha > 0 needs field > 0.3
    candidates = np.stack([_place(rng, S, np.full(2, -reach), np.full(2, reach)) for _ in range(6)])
    grey = image.astype(np.float32).mean(axis=-1)
    local = ndimage.uniform_filter(
        np.hypot(ndimage.sobel(grey, axis=0), ndimage.sobel(grey, axis=1)), size=max(3, int(2 * r0))
    )
    centre = candidates[int(np.argmax([local[int(cy), int(cx)] for cy, cx in candidates]))]
    yy, xx = _grid(S)
    union = np.zeros((S, S), bool)
    for (oy, ox), r in zip(offsets, radii):
        union |= np.hypot(yy - centre[0] - oy, xx - centre[1] - ox) < r
    field = ndimage.gaussian_filter(union.astype(np.float32), sigma=sigma, mode="constant")
    return np.clip((field - 0.3) / 0.4, 0.0, 1.0), field >= 0.5


def _blur(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A blob where the texture is blurred away (Gaussian, sigma 2.5-4 % of the side): detail lost, colour kept."""
    alpha, core = _blob(rng, image)
    s = rng.uniform(0.025, 0.04) * image.shape[0]
    target = ndimage.gaussian_filter(image.astype(np.float32), sigma=(s, s, 0), mode="reflect")
    return _blend(image, target, alpha), core


def _noise(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A blob of strong colour noise (std 40-60 grey levels per pixel and channel)."""
    alpha, core = _blob(rng, image)
    target = image.astype(np.float32) + rng.normal(0.0, rng.uniform(40.0, 60.0), image.shape).astype(np.float32)
    return _blend(image, np.clip(target, 0, 255), alpha), core


def _erase(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A blob filled with the image's median colour: the texture vanishes, the brightness barely changes."""
    alpha, core = _blob(rng, image)
    target = np.broadcast_to(np.median(image.reshape(-1, 3), axis=0).astype(np.float32), image.shape)
    return _blend(image, target, alpha), core


_DEFECTS = {
    "scratch": _scratch,
    "hole": _hole,
    "stain": _stain,
    "patch": _patch,
    "distortion": _distortion,
    "blur": _blur,
    "noise": _noise,
    "erase": _erase,
}
