"""Flip and crop augmentation of rows X (N, D), each an image flattened in ``image_shape`` order, on the
rows' device: (H, W, C) (CIFAR-10's), (C, H, W) (a first dimension of 1, 3 or 4, a last one not) or (H, W)."""

from __future__ import annotations

from collections.abc import Sequence

from fcnet.errors import FcnetError
from fcnet.torch_backend import require_torch

torch = require_torch()
F = torch.nn.functional


class FlipCrop:
    """Random horizontal flip (p = 0.5) and crop after zero padding (the mean image, once
    preprocessed) by max(H // 8, 1) pixels, drawn per image: x (B, D) -> (B, D)."""

    def __init__(self, image_shape: Sequence[int], input_size: int):
        shape = tuple(int(s) for s in image_shape)
        if len(shape) not in (2, 3):
            raise FcnetError(f"image_shape must be (H, W), (H, W, C) or (C, H, W), got {shape}")
        last = len(shape) == 2 or not (shape[0] in (1, 3, 4) and shape[2] not in (1, 3, 4))
        self.h, self.w, self.c = h, w, c = (*shape, 1)[:3] if last else (*shape[1:], shape[0])
        if h * w * c != input_size:
            raise FcnetError(f"image_shape {shape} holds {h * w * c} values, but rows have {input_size}")
        self.channels_last, self.shape = last, (h, w, c) if last else (c, h, w)
        self.pad = max(h // 8, 1)

    def apply(self, x, dy, dx, flip):
        """x (B, D) shifted by (dy, dx) pixels (out (i, j) = in (i + dy, j + dx), zero outside), then
        mirrored where ``flip``: (B, D), new.  The crop indexes the padded batch's sliding windows."""
        b, p, h, w, c = x.shape[0], self.pad, self.h, self.w, self.c
        img = x.view(b, h, w, c) if self.channels_last else x.view(b, c, h, w).permute(0, 2, 3, 1)
        padded = F.pad(img, (0, 0, p, p, p, p))  # (B, H + 2p, W + 2p, C), zeros around
        windows = padded.unfold(1, h, 1).unfold(2, w, 1)  # (B, 2p + 1, 2p + 1, C, H, W) view
        out = windows[torch.arange(b, device=x.device), dy[:, 0] + p, dx[:, 0] + p]  # (B, C, H, W)
        out = torch.where(flip[:, :, None, None], out.flip(3), out)
        if self.channels_last:
            out = out.permute(0, 2, 3, 1)
        return out.reshape(b, -1)

    def mirror(self, x):
        """Every image of x (B, D) mirrored left-right: (B, D), a new tensor."""
        return x.view(x.shape[0], *self.shape).flip(2 if self.channels_last else 3).reshape(x.shape[0], -1)

    def __call__(self, x, gen):
        """Augment one batch x (B, D) with (dy, dx, flip) drawn per image from ``gen``."""
        rows, p = (x.shape[0], 1), self.pad
        draws = (torch.randint(-p, p + 1, rows, generator=gen),
                 torch.randint(-p, p + 1, rows, generator=gen), torch.rand(rows, generator=gen) < 0.5)
        return self.apply(x, *(t.to(x.device) for t in draws))
