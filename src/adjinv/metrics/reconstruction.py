"""Reconstruction scores on display images in [0, 1]: SSIM and PSNR (batched)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..filters import gaussian_kernel1d


def ssim(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 1.0, win_size: int = 11,
         sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM per image (Wang et al. 2004; Gaussian window 11/1.5, K1=.01, K2=.03),
    averaged over channels and valid window positions — the convention of
    ``skimage.metrics.structural_similarity(gaussian_weights=True,
    use_sample_covariance=False)``. ``a``, ``b``: (B, C, H, W) → (B,)."""
    if a.shape != b.shape or a.dim() != 4:
        raise ValueError(f"ssim needs two (B, C, H, W) tensors of one shape, got "
                         f"{tuple(a.shape)} and {tuple(b.shape)}")
    if win_size < 1 or win_size % 2 == 0:
        raise ValueError(f"ssim needs an odd window size (as scikit-image), got {win_size}")
    a, b = a.double(), b.double()
    c = a.shape[1]
    g = gaussian_kernel1d(sigma, win_size // 2, dtype=a.dtype, device=a.device)
    kx = g.view(1, 1, 1, -1).expand(c, 1, 1, win_size)
    ky = g.view(1, 1, -1, 1).expand(c, 1, win_size, 1)

    def filt(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kx, groups=c), ky, groups=c)

    mu_a, mu_b = filt(a), filt(b)
    s_aa = filt(a * a) - mu_a**2
    s_bb = filt(b * b) - mu_b**2
    s_ab = filt(a * b) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * s_ab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (s_aa + s_bb + c2))
    return s.mean(dim=(1, 2, 3))


def psnr(a: torch.Tensor, b: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB per image: (B, C, H, W) → (B,)."""
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-20))
