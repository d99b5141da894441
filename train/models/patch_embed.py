"""Patch embeddings (tokenisers) and the matching patchify for reconstruction targets.

Audio (AudioMAE / MAViL B.2): a [B, 1, T=1024, F=128] log-mel spectrogram is cut into
non-overlapping 16 x 16 patches by a Conv2d (kernel = stride = 16) -> a 64 x 8 grid of
512 tokens, flattened time-major (token ``t * 8 + f``).

Video (mae_st / MAViL B.2): a [B, T=8, 3, 224, 224] clip (the loader's layout, see the team
contract) is permuted to [B, 3, T, H, W] and cut into 2 x 16 x 16 tubelets by a Conv3d
(kernel = stride = (2, 16, 16)) -> a 4 x 14 x 14 grid of 784 tokens, flattened t-major.
"""

from __future__ import annotations

import torch
from torch import nn


def _xavier_like_linear(conv: nn.Module) -> None:
    # MAE: "initialize patch_embed like nn.Linear (instead of nn.Conv2d)"
    w = conv.weight.data
    nn.init.xavier_uniform_(w.view(w.shape[0], -1))
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


class AudioPatchEmbed(nn.Module):
    """[B, C, T, F] spectrogram -> [B, (T/p)*(F/p), dim] tokens (time-major)."""

    def __init__(
        self,
        input_size: tuple[int, int] = (1024, 128),
        patch_size: int = 16,
        in_chans: int = 1,
        dim: int = 768,
    ) -> None:
        super().__init__()
        t, f = input_size
        if t % patch_size or f % patch_size:
            raise ValueError(f"input {input_size} is not divisible by patch {patch_size}")
        self.input_size = (t, f)
        self.patch_size = patch_size
        self.in_chans = in_chans
        self.grid_size = (t // patch_size, f // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.patch_dim = patch_size * patch_size * in_chans
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch_size, stride=patch_size)
        _xavier_like_linear(self.proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) != self.input_size:
            raise ValueError(f"expected spectrogram {self.input_size}, got {tuple(x.shape[-2:])}")
        return self.proj(x).flatten(2).transpose(1, 2)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, T, F] -> [B, L, p*p*C], each patch flattened (p_t, p_f, c) as AudioMAE."""
        b, c = x.shape[:2]
        p = self.patch_size
        h, w = self.grid_size
        x = x.reshape(b, c, h, p, w, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(b, h * w, p * p * c)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`patchify`."""
        b = x.shape[0]
        p, c = self.patch_size, self.in_chans
        h, w = self.grid_size
        x = x.reshape(b, h, w, p, p, c)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(b, c, h * p, w * p)


class VideoPatchEmbed(nn.Module):
    """[B, T, C, H, W] clip -> [B, (T/u)*(H/p)*(W/p), dim] tokens (time-major)."""

    def __init__(
        self,
        num_frames: int = 8,
        img_size: int = 224,
        patch_size: int = 16,
        tubelet: int = 2,
        in_chans: int = 3,
        dim: int = 768,
    ) -> None:
        super().__init__()
        if num_frames % tubelet or img_size % patch_size:
            raise ValueError("frames / image size must be divisible by tubelet / patch size")
        self.num_frames = num_frames
        self.img_size = img_size
        self.patch_size = patch_size
        self.tubelet = tubelet
        self.in_chans = in_chans
        g = img_size // patch_size
        self.grid_size = (num_frames // tubelet, g, g)
        self.num_patches = self.grid_size[0] * g * g
        self.patch_dim = tubelet * patch_size * patch_size * in_chans
        k = (tubelet, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, dim, kernel_size=k, stride=k)
        _xavier_like_linear(self.proj)

    def _check(self, x: torch.Tensor) -> None:
        expected = (self.num_frames, self.in_chans, self.img_size, self.img_size)
        if x.ndim != 5 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"expected video [B, {expected}], got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check(x)
        x = self.proj(x.permute(0, 2, 1, 3, 4))  # [B, C, T, H, W] for Conv3d
        return x.flatten(2).transpose(1, 2)

    def patchify(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, C, H, W] -> [B, L, u*p*p*C], patch flattened (u, p_h, p_w, c) as mae_st."""
        self._check(x)
        b = x.shape[0]
        u, p, c = self.tubelet, self.patch_size, self.in_chans
        t, h, w = self.grid_size
        x = x.reshape(b, t, u, c, h, p, w, p)
        return torch.einsum("ntuchpwq->nthwupqc", x).reshape(b, t * h * w, u * p * p * c)

    def unpatchify(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`patchify` -> [B, T, C, H, W]."""
        b = x.shape[0]
        u, p, c = self.tubelet, self.patch_size, self.in_chans
        t, h, w = self.grid_size
        x = x.reshape(b, t, h, w, u, p, p, c)
        x = torch.einsum("nthwupqc->ntuchpwq", x)
        return x.reshape(b, t * u, c, h * p, w * p)


def inflate_patch_embed_weight(weight2d: torch.Tensor, tubelet: int) -> torch.Tensor:
    """Inflate an image Conv2d kernel [D, C, p, p] to a Conv3d kernel [D, C, u, p, p].

    The 2-D kernel is repeated over the ``u`` frames of a tubelet and divided by ``u``, so a
    static clip (all frames equal) yields exactly the image model's patch embedding
    (MAViL B.3: "repeat and inflate the convolution kernel"; as mae_st / I3D).
    """
    if weight2d.ndim != 4:
        raise ValueError(f"expected a Conv2d weight [D, C, p, p], got {tuple(weight2d.shape)}")
    return weight2d.unsqueeze(2).repeat(1, 1, tubelet, 1, 1) / tubelet
