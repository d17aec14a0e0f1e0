"""The defect library: the defects the demo and `--select validation` inject (scratch, hole, stain, patch, lens
distortion; perlin, smear, crack), their shapes and blends, each returned with an exact mask of the changed pixels.

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
# Kinds of real defects (an inclusion of other material as DRAEM makes it, a smear, a crack) at random places and
# sizes: blur, noise and erase blobs, all one size, were found by every epoch (validation 0.97-0.99 while the test
# AUROC of the same epochs ranged 0.83-1.0), so they could not rank epochs.
VALIDATION_KINDS = ("perlin", "smear", "crack")
VALIDATION_AREA = (0.005, 0.08)  # share of the image the region of a perlin or smear covers (log-uniform)
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
    without it the patch comes from a part of `image` that does not overlap the place it is pasted to. It is also
    the texture a "perlin" blends in (without it, the image itself, turned and recoloured).
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
    if kind == "perlin":
        return _perlin_defect(image, rng, source)
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


def _perlin(S: int, cell: float, rng: np.random.Generator) -> np.ndarray:
    """(S, S) float32 gradient (Perlin) noise in about [-0.7, 0.7]: random unit gradients on a grid of `cell` px,
    quintic fade between them. One draw: the gradient angles."""
    n = int(math.ceil(S / cell)) + 2
    angle = rng.uniform(0.0, 2 * math.pi, (n, n))
    gy, gx = np.sin(angle).astype(np.float32), np.cos(angle).astype(np.float32)
    p = (np.arange(S, dtype=np.float32) + 0.5) / cell
    i = p.astype(np.int64)
    f = p - i

    def corner(dy: int, dx: int) -> np.ndarray:
        iy, ix = (i + dy)[:, None], (i + dx)[None, :]
        return gy[iy, ix] * (f - dy)[:, None] + gx[iy, ix] * (f - dx)[None, :]

    def fade(t: np.ndarray) -> np.ndarray:
        return t * t * t * (t * (t * 6 - 15) + 10)

    u, v = fade(f)[:, None], fade(f)[None, :]
    top = corner(0, 0) + v * (corner(0, 1) - corner(0, 0))
    bottom = corner(1, 0) + v * (corner(1, 1) - corner(1, 0))
    return top + u * (bottom - top)


def _fractal(S: int, cell: float, rng: np.random.Generator, octaves: int = 3) -> np.ndarray:
    """Perlin noise summed over octaves (each half the cell and half the amplitude): irregular at every scale."""
    return sum(0.5**o * _perlin(S, max(2.0, cell / 2**o), rng) for o in range(octaves))


def _perlin_region(rng: np.random.Generator, S: int, structured: np.ndarray | None = None) -> np.ndarray:
    """A bool (S, S) region of exactly round(a * S * S) pixels, a drawn log-uniformly in VALIDATION_AREA: the
    pixels where fractal Perlin noise plus a bump around a random centre is highest, inside the margins. The noise
    (cells of 0.5-1.2 x the region's radius) makes the outline ragged, with bays and the odd island, as DRAEM's
    thresholded Perlin masks; the bump keeps it one defect at one place rather than spots all over the image.
    With `structured` (an image), the centre is the most structured of 6 random places, as for a distortion."""
    lo, hi = VALIDATION_AREA
    area = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    count = max(1, round(area * S * S))
    r = math.sqrt(count / math.pi)
    noise = _fractal(S, r * rng.uniform(0.5, 1.2), rng)
    if structured is None:
        centre = _place(rng, S, np.full(2, -r), np.full(2, r))
    else:
        candidates = np.stack([_place(rng, S, np.full(2, -r), np.full(2, r)) for _ in range(6)])
        grey = structured.astype(np.float32).mean(axis=-1)
        grad = np.hypot(ndimage.sobel(grey, axis=0), ndimage.sobel(grey, axis=1))
        local = ndimage.uniform_filter(grad, size=max(3, int(2 * r)))
        centre = candidates[int(np.argmax([local[int(cy), int(cx)] for cy, cx in candidates]))]
    yy, xx = _grid(S)
    field = noise - 0.35 * ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (r * r)
    m = math.ceil(MARGIN * S)
    field[:m], field[S - m :], field[:, :m], field[:, S - m :] = -np.inf, -np.inf, -np.inf, -np.inf
    region = np.zeros(S * S, bool)
    region[np.argpartition(-field.ravel(), count - 1)[:count]] = True
    return region.reshape(S, S)


def _foreign_texture(source: np.ndarray, S: int, rng: np.random.Generator) -> np.ndarray:
    """(S, S, 3) float32: `source` turned by any angle, scaled x0.7-1.4 about a random point, colour-jittered
    (contrast x0.6-1.5, each channel x0.9-1.1, brightness -40..+40). The same material out of place: its
    grain runs another way, its size and colour are off."""
    src = source.astype(np.float32)
    theta = rng.uniform(0.0, 2 * math.pi)
    scale = rng.uniform(0.7, 1.4)
    at = rng.uniform(0.0, 1.0, 2) * (np.array(src.shape[:2]) - 1)
    c, s = math.cos(theta) / scale, math.sin(theta) / scale
    yy, xx = _grid(S)
    dy, dx = yy - S / 2, xx - S / 2
    coords = np.stack([at[0] + c * dy - s * dx, at[1] + s * dy + c * dx])
    tex = np.stack([ndimage.map_coordinates(src[..., k], coords, order=1, mode="mirror") for k in range(3)], -1)
    contrast = rng.uniform(0.6, 1.5)
    gains = rng.uniform(0.9, 1.1, 3).astype(np.float32)
    shift = rng.uniform(-40.0, 40.0)
    mean = tex.reshape(-1, 3).mean(axis=0)
    return np.clip((tex - mean) * contrast + mean * gains + shift, 0, 255)


def _perlin_defect(
    image: np.ndarray, rng: np.random.Generator, source: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """DRAEM's recipe: a Perlin-shaped region (0.5-8 % of the image) where another picture of the material
    (`source`; the image itself without one), turned, scaled and colour-jittered, is blended in over the image
    (beta 0-0.5 of the image kept), with a hard edge: contamination, a foreign inclusion, a repaired spot."""
    S = image.shape[0]
    region = _perlin_region(rng, S)
    src = image if source is None else np.asarray(source)
    if src.dtype != np.uint8 or src.ndim != 3 or src.shape[2] != 3 or min(src.shape[:2]) < 2:
        raise DataError(f"perlin source must be a (H, W, 3) uint8 picture, got {src.shape} {src.dtype}")
    tex = _foreign_texture(src, S, rng)
    beta = rng.uniform(0.0, 0.5)
    target = beta * image.astype(np.float32) + (1 - beta) * tex
    return _blend(image, target, region.astype(np.float32)), region


def _smear(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A Perlin-shaped region (0.5-8 %) where the texture is dragged 4-10 % of the side along one direction (the
    mean of the image over the drag: streaks, as a wiped wet surface), its edge soft inward. Not a blur: detail
    across the drag stays, detail along it is drawn out."""
    S = image.shape[0]
    region = _perlin_region(rng, S, structured=image)  # smearing a flat area changes nothing
    phi = rng.uniform(0.0, 2 * math.pi)
    length = rng.uniform(0.04, 0.1) * S
    # The edge fades inward (from 0.4 at the outline to 1 a few px in): the smear never leaves its region.
    inward = ndimage.gaussian_filter(region.astype(np.float32), sigma=max(1.0, S / 160))
    alpha = np.where(region, np.clip((inward - 0.3) / 0.5, 0.0, 1.0), 0.0).astype(np.float32)
    ys, xs = np.nonzero(alpha > 0)
    img = image.astype(np.float32)
    steps = np.linspace(0.0, length, max(5, int(math.ceil(length)) + 1))
    dragged = np.zeros((len(ys), 3), np.float32)
    for t in steps:  # content from upstream along the drag, averaged
        coords = np.stack([ys - t * math.sin(phi), xs - t * math.cos(phi)])
        for k in range(3):
            dragged[:, k] += ndimage.map_coordinates(img[..., k], coords, order=1, mode="mirror")
    target = img.copy()
    target[ys, xs] = dragged / len(steps)
    return _blend(image, target, alpha), region


def _crack(image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A dark (x0.15-0.4) jagged line 25-45 % of the side long, 2-4 px wide at <= 256 px in its middle and tapering
    to 1 px at its ends, with 1-3 thinner branches: a crack. Jagged (a new heading every ~3 px around a slowly
    drifting course), not the smooth curve of a scratch, and only ever darker."""
    S = image.shape[0]
    unit = max(1.0, S / 256)
    half = rng.uniform(1.0, 2.0) * unit  # half-width at the widest

    def path(length: float, heading: float) -> np.ndarray:
        n = max(2, int(length / (3 * unit)))
        course = heading + np.cumsum(rng.normal(0.0, 0.08, n))
        turn = course + rng.normal(0.0, 0.45, n)
        seg = length / n
        steps = np.stack([np.sin(turn), np.cos(turn)], 1) * seg
        return np.concatenate([np.zeros((1, 2)), np.cumsum(steps, 0)])

    main = path(rng.uniform(0.25, 0.45) * S, rng.uniform(0.0, 2 * math.pi))
    lines = [(main, half, True)]
    for _ in range(int(rng.integers(1, 4))):
        k = int(rng.integers(1, len(main) - 1)) if len(main) > 2 else 0
        d = main[min(k + 1, len(main) - 1)] - main[max(k - 1, 0)]
        side = rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.0)
        branch = path(rng.uniform(0.08, 0.2) * S, math.atan2(d[0], d[1]) + side)
        lines.append((branch + main[k], 0.7 * half, False))
    darkness = rng.uniform(0.15, 0.4)
    pts, widths = [], []
    for verts, w, both in lines:  # dense samples (4 per px) with their half-widths
        seg = np.linalg.norm(np.diff(verts, axis=0), axis=1)
        s = np.concatenate([[0.0], np.cumsum(seg)])
        t = np.linspace(0.0, s[-1], int(4 * s[-1]) + 2)
        dense = np.stack([np.interp(t, s, verts[:, 0]), np.interp(t, s, verts[:, 1])], 1)
        frac = t / max(s[-1], 1e-6)
        taper = np.sin(math.pi * frac) if both else 1.0 - frac  # the main line is widest in its middle
        pts.append(dense)
        widths.append(0.5 + (w - 0.5) * taper)
    pts, widths = np.concatenate(pts), np.concatenate(widths)
    reach = half + 1.5
    # Shrink the whole shape if it would not fit inside the margins (small images).
    room = S - 2 * math.ceil(MARGIN * S) - 2 * reach - 2
    extent = float((pts.max(0) - pts.min(0)).max())
    if extent > room:
        pts = (pts - pts.min(0)) * (room / extent)
    centre = _place(rng, S, pts.min(0) - reach, pts.max(0) + reach)
    yy, xx = _grid(S)
    dist, nearest = cKDTree(pts + centre).query(np.stack([yy.ravel(), xx.ravel()], 1), distance_upper_bound=reach)
    hit = np.isfinite(dist)
    alpha = np.zeros(S * S, np.float32)
    alpha[hit] = np.clip(widths[nearest[hit]] + 0.5 - dist[hit], 0.0, 1.0)
    alpha = alpha.reshape(S, S)
    return _blend(image, image.astype(np.float32) * darkness, alpha), alpha >= 0.5


_DEFECTS = {
    "scratch": _scratch,
    "hole": _hole,
    "stain": _stain,
    "patch": _patch,
    "distortion": _distortion,
    "perlin": _perlin_defect,
    "smear": _smear,
    "crack": _crack,
}
