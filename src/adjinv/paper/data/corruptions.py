"""The 15 ImageNet-C corruptions × 5 severities, on the fly, in torch (Sec. 3.2.5, docs/method.md §9).

Hendrycks & Dietterich (2019), "Benchmarking neural network robustness to
common corruptions and perturbations". The severity constants are those of the
reference ``make_imagenet_c.py`` as carried by the ``imagecorruptions`` package
(Michaelis et al. 2019, Apache-2.0), which made them size-independent where the
original assumed 224 px (fog, frost, elastic).

Why our own implementation: ``imagecorruptions`` 1.1.2 breaks on current
scikit-image; the maintained fork needs OpenCV, numba and llvmlite (~400 MB),
draws from NumPy's *global* random state (two of its corruptions re-seed it or
ignore it), and only takes images ≥ 32 px. Here every corruption is a function
of ``(images, severity, generator)``: tensors in, tensors out, any device, and
bit-for-bit reproducible from a seed without touching global RNG state.

Where this differs from the reference (so numbers are comparable in kind, not
bit-identical to the published ImageNet-C/CIFAR-100-C files; use
[`adjinv.paper.data.datasets.CIFAR100C`][adjinv.paper.data.datasets.CIFAR100C] for those):

- **frost** blends a *procedural* ice texture (plasma fractal + motion-blurred
  crystal streaks, bluish white) instead of the reference's six frost
  photographs, which are not ours to ship;
- **glass_blur** shuffles pixels with one vectorised random gather per
  iteration instead of the reference's sequential swap loop (same local
  displacement range, pixels may repeat);
- **pixelate** averages over boxes like PIL's BOX filter, then upsamples with
  nearest neighbours, as a tensor operation;
- borders: reflect/replicate padding stands in for OpenCV's and SciPy's modes.

Spatial sizes (blur radii, glass displacement, motion length) are in pixels at
the reference's 224 px. ``spatial_scale`` multiplies them, e.g.
``spatial_scale = side / 224`` for small images, where the unscaled kernels
would erase the image at low severity (CIFAR-10-C re-tuned its constants for
that reason).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ... import filters
from ...errors import AdjinvError

CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

Corruption = Callable[[torch.Tensor, int, torch.Generator, float], torch.Tensor]


# ----------------------------------------------------------------------------- helpers
def _rand(g: torch.Generator, *shape: int, like: torch.Tensor) -> torch.Tensor:
    return torch.rand(*shape, generator=g, dtype=torch.float64).to(like.device, like.dtype)


def _randn(g: torch.Generator, *shape: int, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64).to(like.device, like.dtype)


def _uniform(g: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=g, dtype=torch.float64))


def _pad(x: torch.Tensor, ph: int, pw: int, mode: str) -> torch.Tensor:
    if mode == "reflect" and (ph >= x.shape[-2] or pw >= x.shape[-1]):
        mode = "replicate"  # reflection needs the pad to be smaller than the image
    return F.pad(x, (pw, pw, ph, ph), mode=mode)


def gaussian_blur(x: torch.Tensor, sigma: float, truncate: float = 4.0,
                  mode: str = "replicate") -> torch.Tensor:
    """Separable Gaussian blur of (B, C, H, W), radius ``⌈truncate·σ⌉`` (scikit-image's
    defaults: ``truncate=4``, edge mode 'nearest' = replicate)."""
    return filters.gaussian_blur(x, sigma, max(1, int(truncate * sigma + 0.5)), mode)


def _filter2d(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Correlate every channel with ``kernel`` (kh, kw), reflect-101 borders (OpenCV's)."""
    c = x.shape[1]
    kh, kw = kernel.shape
    y = _pad(x, kh // 2, kw // 2, "reflect")
    return F.conv2d(y, kernel.to(x).view(1, 1, kh, kw).expand(c, 1, kh, kw), groups=c)


def _disk(radius: float, alias_blur: float) -> torch.Tensor:
    """The reference's anti-aliased disk kernel (normalised)."""
    if radius <= 8:
        span, ks = 8, 3
    else:
        span, ks = math.ceil(radius), 5
    t = torch.arange(-span, span + 1, dtype=torch.float64)
    if float(radius).is_integer():
        yy, xx = torch.meshgrid(t, t, indexing="ij")
        d = ((xx ** 2 + yy ** 2) <= radius ** 2).to(torch.float64)
    else:
        # a scaled (fractional) radius: the disk's area coverage of each pixel, from 8 x 8
        # sub-samples, so that the blur grows continuously with the radius
        sub = (torch.arange(8, dtype=torch.float64) + 0.5) / 8 - 0.5
        ts = (t[:, None] + sub[None, :]).flatten()
        yy, xx = torch.meshgrid(ts, ts, indexing="ij")
        inside = ((xx ** 2 + yy ** 2) <= radius ** 2).to(torch.float64)
        n = t.numel()
        d = inside.view(n, 8, n, 8).mean(dim=(1, 3))
    d = d / d.sum()
    g = torch.arange(ks, dtype=torch.float64) - (ks - 1) / 2
    g = torch.exp(-g * g / (2 * alias_blur ** 2))
    g = g / g.sum()
    out = _filter2d(d[None, None], torch.outer(g, g))[0, 0]
    return out / out.sum()


def _shift(img: torch.Tensor, dx: int, dy: int) -> torch.Tensor:
    """Translate (…, H, W) by (dx, dy), filling with the edge row/column (reference ``shift``)."""
    if dx:
        img = torch.roll(img, dx, dims=-1)
        if dx > 0:
            img[..., :, :dx] = img[..., :, dx:dx + 1]
        else:
            img[..., :, dx:] = img[..., :, dx - 1:dx]
    if dy:
        img = torch.roll(img, dy, dims=-2)
        if dy > 0:
            img[..., :dy, :] = img[..., dy:dy + 1, :]
        else:
            img[..., dy:, :] = img[..., dy - 1:dy, :]
    return img


def _motion_blur(img: torch.Tensor, radius: float, sigma: float, angle: float) -> torch.Tensor:
    """One-sided Gaussian motion kernel along ``angle`` (degrees), as in ``imagecorruptions``
    (which replaced ImageMagick's motion blur by this)."""
    width = 2 * max(1, round(radius)) + 1
    sigma = max(sigma, 1e-3)
    t = torch.arange(width, dtype=torch.float64)
    kern = torch.exp(-t * t / (2 * sigma * sigma))
    kern = kern / kern.sum()
    py, px = width * math.sin(math.radians(angle)), width * math.cos(math.radians(angle))
    hyp = math.hypot(py, px)
    out = torch.zeros_like(img)
    h, w = img.shape[-2:]
    for i in range(width):
        dy = -math.ceil(i * py / hyp - 0.5)
        dx = -math.ceil(i * px / hyp - 0.5)
        if abs(dy) >= h or abs(dx) >= w:
            break
        out = out + float(kern[i]) * _shift(img.clone(), dx, dy)
    return out


def _clipped_zoom(x: torch.Tensor, z: float) -> torch.Tensor:
    """Zoom (B, C, H, W) by ``z ≥ 1`` about the centre, keeping the size."""
    h, w = x.shape[-2:]
    ch, cw = math.ceil(h / z), math.ceil(w / z)
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[..., top:top + ch, left:left + cw]
    oh, ow = max(h, round(ch * z)), max(w, round(cw * z))
    return F.interpolate(crop, size=(oh, ow), mode="bilinear", align_corners=True)[..., :h, :w]


def plasma_fractal(mapsize: int, wibbledecay: float, g: torch.Generator) -> torch.Tensor:
    """Diamond-square height map (mapsize × mapsize, a power of two) in [0, 1] (reference port)."""
    if mapsize & (mapsize - 1):
        raise AdjinvError(f"mapsize must be a power of two, got {mapsize}")
    a = torch.zeros(mapsize, mapsize, dtype=torch.float64)
    step, wibble = mapsize, 100.0

    def wibbled(arr: torch.Tensor) -> torch.Tensor:
        return arr / 4 + wibble * (2 * torch.rand(arr.shape, generator=g, dtype=torch.float64) - 1) * wibble

    while step >= 2:
        half = step // 2
        corner = a[0:mapsize:step, 0:mapsize:step]
        sq = corner + torch.roll(corner, -1, 0)
        sq = sq + torch.roll(sq, -1, 1)
        a[half:mapsize:step, half:mapsize:step] = wibbled(sq)
        dr = a[half:mapsize:step, half:mapsize:step]
        ul = a[0:mapsize:step, 0:mapsize:step]
        lt = dr + torch.roll(dr, 1, 0) + ul + torch.roll(ul, -1, 1)
        a[0:mapsize:step, half:mapsize:step] = wibbled(lt)
        tt = dr + torch.roll(dr, 1, 1) + ul + torch.roll(ul, -1, 0)
        a[half:mapsize:step, 0:mapsize:step] = wibbled(tt)
        step //= 2
        wibble /= wibbledecay
    a = a - a.min()
    return a / a.max()


def _next_pow2(n: int) -> int:
    return 1 if n <= 1 else 2 ** (n - 1).bit_length()


def rgb_to_hsv(x: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB in [0, 1] → HSV with hue in [0, 1) (scikit-image's convention)."""
    r, g, b = x.unbind(1)
    v, _ = x.max(1)
    mn, _ = x.min(1)
    delta = v - mn
    s = torch.where(v > 0, delta / v.clamp_min(1e-12), torch.zeros_like(v))
    dz = delta.clamp_min(1e-12)
    h = torch.where(v == r, (g - b) / dz, torch.where(v == g, 2 + (b - r) / dz, 4 + (r - g) / dz))
    h = torch.where(delta > 0, (h / 6) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, v], 1)


def hsv_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Inverse of [`rgb_to_hsv()`][rgb_to_hsv]."""
    h, s, v = x.unbind(1)
    i = torch.floor(h * 6)
    f = h * 6 - i
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    i = i.long() % 6
    choices = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)]
    out = torch.zeros_like(x)
    for k, (r, g, b) in enumerate(choices):
        m = (i == k).unsqueeze(1)
        out = torch.where(m, torch.stack([r, g, b], 1), out)
    return out


def _gray(x: torch.Tensor) -> torch.Tensor:
    w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype, device=x.device)
    return (x * w.view(1, 3, 1, 1)).sum(1, keepdim=True)


def frost_texture(h: int, w: int, g: torch.Generator) -> torch.Tensor:
    """A procedural frost layer (3, h, w) in [0, 1]: a fine plasma fractal for the
    frosted haze plus motion-blurred sparse specks for ice crystals, tinted bluish
    white. Stands in for the reference's frost photographs (module docstring)."""
    side = _next_pow2(max(h, w))
    haze = plasma_fractal(side, 1.6, g)[:h, :w]
    specks = (torch.rand(h, w, generator=g, dtype=torch.float64) < 0.04).to(torch.float64)
    specks = specks * torch.rand(h, w, generator=g, dtype=torch.float64)
    radius = max(2.0, 0.06 * max(h, w))
    streaks = torch.zeros(h, w, dtype=torch.float64)
    for _ in range(3):
        streaks = streaks + _motion_blur(specks, radius, radius / 2, _uniform(g, -180.0, 180.0))
    streaks = streaks / streaks.max().clamp_min(1e-12)
    tex = 0.6 * haze + 0.4 * streaks.sqrt()
    # brightness statistics of the reference photographs (mean ≈ 0.58, std ≈ 0.15, bluish),
    # whatever the image size
    tex = 0.58 + 0.15 * (tex - tex.mean()) / tex.std().clamp_min(1e-12)
    tint = torch.tensor([0.88, 1.0, 1.08], dtype=torch.float64).view(3, 1, 1)
    return (tex.unsqueeze(0) * tint).clamp(0, 1)


# ----------------------------------------------------------------------------- corruptions
def _gaussian_noise(x: torch.Tensor, s: int, g: torch.Generator, sc: float) -> torch.Tensor:
    c = (0.08, 0.12, 0.18, 0.26, 0.38)[s - 1]
    return x + c * _randn(g, *x.shape, like=x)


def _shot_noise(x: torch.Tensor, s: int, g: torch.Generator, sc: float) -> torch.Tensor:
    c = (60, 25, 12, 5, 3)[s - 1]
    rate = (x.detach().to("cpu", torch.float64).clamp(0, 1) * c)
    return torch.poisson(rate, generator=g).to(x.device, x.dtype) / c


def _impulse_noise(x: torch.Tensor, s: int, g: torch.Generator, sc: float) -> torch.Tensor:
    c = (0.03, 0.06, 0.09, 0.17, 0.27)[s - 1]
    flip = _rand(g, *x.shape, like=x) < c
    salt = _rand(g, *x.shape, like=x) < 0.5
    out = torch.where(flip & salt, torch.ones_like(x), x)
    return torch.where(flip & ~salt, torch.zeros_like(x), out)


def _defocus_blur(x: torch.Tensor, s: int, g: torch.Generator, sc: float) -> torch.Tensor:
    radius, alias = ((3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5))[s - 1]
    return _filter2d(x, _disk(max(radius * sc, 0.5), max(alias * sc, 0.05)))


def _glass_blur(x: torch.Tensor, s: int, g: torch.Generator, sc: float) -> torch.Tensor:
    sigma, delta, iters = ((0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2))[s - 1]
    sigma, delta = sigma * sc, max(1, round(delta * sc))
    y = torch.floor(gaussian_blur(x, sigma).clamp(0, 1) * 255) / 255  # the reference's uint8 step
    b, c, h, w = y.shape
    hh = torch.arange(delta + 1, h - delta + 1, device=x.device)
    ww = torch.arange(delta + 1, w - delta + 1, device=x.device)
    if hh.numel() and ww.numel():
        for _ in range(iters):
            shape = (b, hh.numel(), ww.numel())
            dy = torch.randint(-delta, delta, shape, generator=g).to(x.device)
            dx = torch.randint(-delta, delta, shape, generator=g).to(x.device)
            src_h = (hh.view(1, -1, 1) + dy).view(b, 1, -1).expand(b, c, -1)
            src_w = (ww.view(1, 1, -1) + dx).view(b, 1, -1).expand(b, c, -1)
            flat = y.flatten(2)
            vals = torch.gather(flat, 2, src_h * w + src_w)
            inner = y[:, :, hh[0]:hh[-1] + 1, ww[0]:ww[-1] + 1]
            y = y.clone()
            y[:, :, hh[0]:hh[-1] + 1, ww[0]:ww[-1] + 1] = vals.view_as(inner)
    return gaussian_blur(y, sigma)


def _motion_blur_c(x: torch.Tensor, s: int, g: torch.Generator, sc: float) -> torch.Tensor:
    radius, sigma = ((10, 3), (15, 5), (15, 8), (15, 12), (20, 15))[s - 1]
    return torch.stack([_motion_blur(im, radius * sc, sigma * sc, _uniform(g, -45.0, 45.0))
                        for im in x])


def _zoom_blur(x: torch.Tensor, s: int, g: torch.Generator, sc: float) -> torch.Tensor:
    start, stop, step = ((1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02),
                         (1, 1.31, 0.03))[s - 1]
    zooms = torch.arange(start, stop, step, dtype=torch.float64).tolist()
    out = x.clone()
    for z in zooms:
        out = out + _clipped_zoom(x, z)
    return out / (len(zooms) + 1)


def _snow(x: torch.Tensor, s: int, g: torch.Generator, sc: float) -> torch.Tensor:
    loc, scale, zoom, thr, radius, sigma, blend = (
        (0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
        (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
        (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55))[s - 1]
    b, _, h, w = x.shape
    layer = loc + scale * _randn(g, b, 1, h, w, like=x)
    layer = _clipped_zoom(layer, zoom)
    layer = torch.where(layer < thr, torch.zeros_like(layer), layer).clamp(0, 1)
    layer = torch.stack([_motion_blur(lay, radius * sc, sigma * sc, _uniform(g, -135.0, -45.0))
                         for lay in layer])
    layer = torch.round(layer * 255) / 255
    x = blend * x + (1 - blend) * torch.maximum(x, _gray(x) * 1.5 + 0.5)
    return x + layer + torch.rot90(layer, 2, dims=(-2, -1))


def _frost(x: torch.Tensor, s: int, g: torch.Generator, sc: float) -> torch.Tensor:
    a, b = ((1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75))[s - 1]
    h, w = x.shape[-2:]
    tex = torch.stack([frost_texture(h, w, g) for _ in range(x.shape[0])]).to(x)
    return a * x + b * tex


def _fog(x: torch.Tensor, s: int, g: torch.Generator, sc: float) -> torch.Tensor:
    amount, decay = ((1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4))[s - 1]
    h, w = x.shape[-2:]
    side = _next_pow2(max(h, w))
    fog = torch.stack([plasma_fractal(side, decay, g)[:h, :w] for _ in range(x.shape[0])])
    mx = x.flatten(1).amax(1).view(-1, 1, 1, 1)
    return (x + amount * fog.unsqueeze(1).to(x)) * mx / (mx + amount)


def _brightness(x: torch.Tensor, s: int, g: torch.Generator, sc: float) -> torch.Tensor:
    c = (0.1, 0.2, 0.3, 0.4, 0.5)[s - 1]
    hsv = rgb_to_hsv(x.clamp(0, 1))
    hsv = torch.cat([hsv[:, :2], (hsv[:, 2:] + c).clamp(0, 1)], 1)
    return hsv_to_rgb(hsv)


def _contrast(x: torch.Tensor, s: int, g: torch.Generator, sc: float) -> torch.Tensor:
    c = (0.4, 0.3, 0.2, 0.1, 0.05)[s - 1]
    m = x.mean(dim=(-2, -1), keepdim=True)
    return (x - m) * c + m


def _elastic(x: torch.Tensor, s: int, g: torch.Generator, sc: float) -> torch.Tensor:
    alpha = (250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12)[s - 1]
    b, _, h, w = x.shape
    sigma_h, sigma_w = 0.01 * h, 0.01 * w
    max_d = 0.005 * h

    def field() -> torch.Tensor:
        f = (2 * _rand(g, b, 1, h, w, like=x) - 1) * max_d
        f = gaussian_blur(f, sigma_h, truncate=3, mode="reflect") if sigma_h == sigma_w else \
            _aniso_blur(f, sigma_h, sigma_w)
        return f[:, 0] * alpha

    dx, dy = field(), field()
    yy, xx = torch.meshgrid(torch.arange(h, device=x.device, dtype=x.dtype),
                            torch.arange(w, device=x.device, dtype=x.dtype), indexing="ij")
    gx = 2 * (xx + dx) / max(w - 1, 1) - 1
    gy = 2 * (yy + dy) / max(h - 1, 1) - 1
    grid = torch.stack([gx, gy], -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)


def _aniso_blur(f: torch.Tensor, sh: float, sw: float) -> torch.Tensor:
    rh, rw = max(1, int(3 * sh + 0.5)), max(1, int(3 * sw + 0.5))
    kh = filters.gaussian_kernel1d(sh, rh, dtype=f.dtype, device=f.device)
    kw = filters.gaussian_kernel1d(sw, rw, dtype=f.dtype, device=f.device)
    y = _pad(f, rh, rw, "reflect")
    y = F.conv2d(y, kw.view(1, 1, 1, -1))
    return F.conv2d(y, kh.view(1, 1, -1, 1))


def _pixelate(x: torch.Tensor, s: int, g: torch.Generator, sc: float) -> torch.Tensor:
    c = (0.6, 0.5, 0.4, 0.3, 0.25)[s - 1]
    h, w = x.shape[-2:]
    ah, aw = _box_matrix(h, max(1, int(h * c))).to(x), _box_matrix(w, max(1, int(w * c))).to(x)
    small = ah @ x @ aw.T
    return F.interpolate(small, size=(h, w), mode="nearest-exact")


def _box_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) weights of PIL's BOX downscaling: each output pixel averages the
    input interval it covers, with fractional weights at the ends."""
    scale = n_in / n_out
    lo = torch.arange(n_out, dtype=torch.float64)[:, None] * scale
    left = torch.arange(n_in, dtype=torch.float64)[None, :]
    overlap = (torch.minimum(lo + scale, left + 1) - torch.maximum(lo, left)).clamp_min(0)
    return overlap / overlap.sum(1, keepdim=True)


def _jpeg(x: torch.Tensor, s: int, g: torch.Generator, sc: float) -> torch.Tensor:
    import io

    import numpy as np
    from PIL import Image

    q = (25, 18, 15, 10, 7)[s - 1]
    u8 = (x.detach().clamp(0, 1) * 255).round().to("cpu", torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for im in u8:  # PIL at the edge: JPEG is a file format
        buf = io.BytesIO()
        Image.fromarray(im).save(buf, format="JPEG", quality=q)
        buf.seek(0)
        with Image.open(buf) as dec:
            out.append(torch.from_numpy(np.array(dec.convert("RGB"))))
    return torch.stack(out).permute(0, 3, 1, 2).to(x.device, x.dtype) / 255


_FUNCS: dict[str, Corruption] = {
    "gaussian_noise": _gaussian_noise, "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise, "defocus_blur": _defocus_blur, "glass_blur": _glass_blur,
    "motion_blur": _motion_blur_c, "zoom_blur": _zoom_blur, "snow": _snow, "frost": _frost,
    "fog": _fog, "brightness": _brightness, "contrast": _contrast,
    "elastic_transform": _elastic, "pixelate": _pixelate, "jpeg_compression": _jpeg,
}


def corrupt(images: torch.Tensor, name: str, severity: int, *, seed: int | None = 0,
            generator: torch.Generator | None = None, spatial_scale: float = 1.0) -> torch.Tensor:
    """Apply corruption ``name`` at ``severity`` (0 = none, 1–5) to images in [0, 1].

    ``images``: (3, H, W) or (B, 3, H, W), any float dtype and device. Returns the same
    shape, dtype and device, clipped to [0, 1]. Randomness comes from ``generator`` if
    given, else from a fresh generator seeded with ``seed`` (so equal seeds give equal
    outputs); each image of a batch gets its own draw. ``spatial_scale`` multiplies the
    pixel sizes of the blur kernels (see the module docstring).
    """
    if name not in _FUNCS:
        raise AdjinvError(f"unknown corruption {name!r}; choose one of {', '.join(CORRUPTIONS)}")
    if severity not in (0, *SEVERITIES):
        raise AdjinvError(f"severity must be 0 (clean) or 1-5, got {severity!r}")
    if spatial_scale <= 0:
        raise AdjinvError(f"spatial_scale must be positive, got {spatial_scale}")
    single = images.dim() == 3
    x = images.unsqueeze(0) if single else images
    if x.dim() != 4 or x.shape[1] != 3:
        raise AdjinvError(f"expected (3, H, W) or (B, 3, H, W) RGB images, got {tuple(images.shape)}")
    if not x.is_floating_point():
        raise AdjinvError(f"expected float images in [0, 1], got dtype {images.dtype}")
    if severity == 0:
        return images.clone()
    g = generator if generator is not None else torch.Generator().manual_seed(int(seed or 0))
    work = x.to(torch.float32) if x.dtype in (torch.float16, torch.bfloat16) else x
    out = _FUNCS[name](work, severity, g, spatial_scale).clamp(0, 1).to(images.dtype)
    return out[0] if single else out
