"""Data augmentation for training: random shifts and small rotations, one draw per image. Digits
drawn by people or rendered from fonts are off MNIST's placement by a pixel or two and a few
degrees (README, "Use the model"); a seeded generator gives the same batch bit for bit."""

import math

import torch
import torch.nn.functional as F

SIDE = 28


def augment(
    xb: torch.Tensor, generator: torch.Generator, max_shift: int = 2, max_rotate: float = 10.0
) -> torch.Tensor:
    """xb [B, 784] in [0, 1], each image rotated (degrees) then shifted (pixels) by its own
    uniform random draw, black outside."""
    if xb.ndim != 2 or xb.shape[1] != SIDE * SIDE:
        raise ValueError(f"augment wants [B, {SIDE * SIDE}] images, got {list(xb.shape)}")
    if len(xb) == 0 or (max_shift == 0 and max_rotate == 0):
        return xb
    u = torch.rand(len(xb), 3, generator=generator, dtype=torch.float64) * 2 - 1
    angle = u[:, 0] * math.radians(max_rotate)
    # affine_grid maps output coordinates in [-1, 1] to input ones: one pixel is 2/SIDE.
    sx, sy = (u[:, 1:] * max_shift * 2 / SIDE).unbind(1)
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack([cos, -sin, sx, sin, cos, sy], 1).view(-1, 2, 3).float()
    images = xb.view(-1, 1, SIDE, SIDE)
    grid = F.affine_grid(theta.to(xb.device, xb.dtype), list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.clamp_(0, 1).view(-1, SIDE * SIDE)
