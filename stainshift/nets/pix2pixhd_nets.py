"""The networks of pix2pixHD (Wang et al., 2018): global generator, local enhancer, multi-scale discriminator and the
instance-wise feature encoder.

Like :mod:`stainshift.nets.generators`, every network initialises its weights from torch's global RNG
(:func:`~stainshift.nets.generators.init_weights`), and the generators and the encoder say which ``multiple`` input
height and width must be divisible by and the smallest side (``min_size``) they can process.
"""

from __future__ import annotations

import torch
from torch import nn

from stainshift.nets.generators import ResnetBlock, _pad, _uses_bias, init_weights, norm_layer


def _c7s1(in_ch: int, out_ch: int, norm: str, padding: str) -> list[nn.Module]:
    """7x7 stride-1 convolution, norm, ReLU (the first layer of every pix2pixHD generator)."""
    pad, p = _pad(padding, 3)
    return [*pad, nn.Conv2d(in_ch, out_ch, 7, padding=p, bias=_uses_bias(norm)), norm_layer(norm)(out_ch),
            nn.ReLU(True)]


def _down(in_ch: int, out_ch: int, norm: str) -> list[nn.Module]:
    return [nn.Conv2d(in_ch, out_ch, 3, stride=2, padding=1, bias=_uses_bias(norm)), norm_layer(norm)(out_ch),
            nn.ReLU(True)]


def _up(in_ch: int, out_ch: int, norm: str) -> list[nn.Module]:
    return [nn.ConvTranspose2d(in_ch, out_ch, 3, stride=2, padding=1, output_padding=1, bias=_uses_bias(norm)),
            norm_layer(norm)(out_ch), nn.ReLU(True)]


def _head(in_ch: int, out_ch: int, padding: str) -> list[nn.Module]:
    """7x7 output convolution and tanh."""
    pad, p = _pad(padding, 3)
    return [*pad, nn.Conv2d(in_ch, out_ch, 7, padding=p), nn.Tanh()]


class GlobalGenerator(nn.Module):
    """c7s1-ngf, ``n_downsample`` stride-2 3x3 convolutions (channels doubling, no cap), ``n_blocks`` residual
    blocks, as many transposed convolutions, c7s1-out_ch and tanh. ``features`` is everything up to the head, the
    part a :class:`LocalEnhancer` uses; ``head`` the 7x7 output convolution."""

    def __init__(self, in_ch: int, out_ch: int, ngf: int = 64, n_downsample: int = 4, n_blocks: int = 9,
                 norm: str = "instance", padding: str = "reflect") -> None:
        super().__init__()
        if ngf < 1 or n_downsample < 1 or n_blocks < 0:
            raise ValueError(f"ngf, n_downsample must be >= 1 and n_blocks >= 0 (got {ngf}, {n_downsample}, "
                             f"{n_blocks})")
        layers = _c7s1(in_ch, ngf, norm, padding)
        ch = ngf
        for _ in range(n_downsample):
            layers += _down(ch, ch * 2, norm)
            ch *= 2
        layers += [ResnetBlock(ch, norm, padding) for _ in range(n_blocks)]
        for _ in range(n_downsample):
            layers += _up(ch, ch // 2, norm)
            ch //= 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(*_head(ngf, out_ch, padding))
        self.ngf = ngf
        self.multiple = 2**n_downsample
        self.min_size = 2 * self.multiple  # the residual blocks' 1-pixel reflection needs 2 px at the bottleneck
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def downsample_2x() -> nn.AvgPool2d:
    """pix2pixHD's input pyramid step: 3x3 average pooling, stride 2, padded pixels not counted."""
    return nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)


class LocalEnhancer(nn.Module):
    """One local enhancer around a global generator of ``2 * ngf`` filters that sees the input at half size.

    output = up(down(x) + global_generator.features(avgpool(x))), where ``down`` is c7s1-ngf and a stride-2
    convolution to 2ngf, and ``up`` holds ``n_blocks_local`` residual blocks, a transposed convolution, c7s1-out_ch and
    tanh. The global generator is a whole :class:`GlobalGenerator` (its unused head included), so the weights of a
    global run load into ``global_generator`` as they are.
    """

    def __init__(self, in_ch: int, out_ch: int, ngf: int = 32, n_downsample_global: int = 4,
                 n_blocks_global: int = 9, n_blocks_local: int = 3, norm: str = "instance",
                 padding: str = "reflect") -> None:
        super().__init__()
        if n_blocks_local < 0:
            raise ValueError(f"n_blocks_local must be >= 0 (got {n_blocks_local})")
        self.global_generator = GlobalGenerator(in_ch, out_ch, 2 * ngf, n_downsample_global, n_blocks_global, norm,
                                                padding)
        self.downsample = downsample_2x()
        self.down = nn.Sequential(*_c7s1(in_ch, ngf, norm, padding), *_down(ngf, 2 * ngf, norm))
        self.up = nn.Sequential(*[ResnetBlock(2 * ngf, norm, padding) for _ in range(n_blocks_local)],
                                *_up(2 * ngf, ngf, norm), *_head(ngf, out_ch, padding))
        self.multiple = 2 * self.global_generator.multiple
        self.min_size = 2 * self.global_generator.min_size
        init_weights(self.down)
        init_weights(self.up)

    def local_parameters(self) -> list[nn.Parameter]:
        """The enhancer's own parameters (trained alone for the first ``niter_fix_global`` epochs)."""
        return [*self.down.parameters(), *self.up.parameters()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x) + self.global_generator.features(self.downsample(x)))


class FeatureDiscriminator(nn.Module):
    """pix2pixHD's PatchGAN that also returns its intermediate features: ``n_layers + 2`` stages of 4x4
    convolutions with 2-pixel padding (the reference's), ``n_layers`` of them stride 2 (the first without norm), one
    stride 1, then the 1-channel output; channels ndf, 2ndf, ... capped at 8ndf, LeakyReLU 0.2."""

    def __init__(self, in_ch: int, ndf: int = 64, n_layers: int = 3, norm: str = "instance") -> None:
        super().__init__()
        if n_layers < 1 or ndf < 1:
            raise ValueError(f"n_layers and ndf must be >= 1 (got {n_layers}, {ndf})")
        make_norm, bias = norm_layer(norm), _uses_bias(norm)
        stages = [nn.Sequential(nn.Conv2d(in_ch, ndf, 4, stride=2, padding=2), nn.LeakyReLU(0.2, True))]
        ch = ndf
        for n in range(1, n_layers + 1):
            nxt = ndf * min(2**n, 8)
            stride = 2 if n < n_layers else 1
            stages.append(nn.Sequential(nn.Conv2d(ch, nxt, 4, stride=stride, padding=2, bias=bias), make_norm(nxt),
                                        nn.LeakyReLU(0.2, True)))
            ch = nxt
        stages.append(nn.Sequential(nn.Conv2d(ch, 1, 4, stride=1, padding=2)))
        self.stages = nn.ModuleList(stages)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The output of every stage; the last is the patch logits."""
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


class MultiscaleDiscriminator(nn.Module):
    """``num_d`` :class:`FeatureDiscriminator` of the same shape; discriminator ``i`` sees the input average-pooled
    ``i`` times (3x3, stride 2). Returns one list of ``n_layers + 2`` features per scale, full size first."""

    def __init__(self, in_ch: int, ndf: int = 64, n_layers: int = 3, num_d: int = 2, norm: str = "instance") -> None:
        super().__init__()
        if num_d < 1:
            raise ValueError(f"num_d must be >= 1 (got {num_d})")
        self.scales = nn.ModuleList(FeatureDiscriminator(in_ch, ndf, n_layers, norm) for _ in range(num_d))
        self.downsample = downsample_2x()
        self.multiple = 2**(num_d - 1)  # every pooling halves the sides exactly
        self.min_size = self.multiple

    def forward(self, x: torch.Tensor) -> list[list[torch.Tensor]]:
        result = []
        for i, scale in enumerate(self.scales):
            if i:
                x = self.downsample(x)
            result.append(scale(x))
        return result


def instance_means(features: torch.Tensor, index: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-instance mean of B x C x H x W ``features`` over the pixels of each of the ``n`` instances of the
    B x H x W ``index`` map: (B x n x C means, B x n pixel counts); an absent instance has mean 0 and count 0."""
    with torch.autocast(features.device.type, enabled=False):  # sums over many pixels: float32, even under AMP
        member = nn.functional.one_hot(index.long(), n).float()  # B x H x W x n
        counts = member.sum((1, 2))
        sums = torch.einsum("bchw,bhwn->bnc", features.float(), member)
    return sums / counts.clamp_min(1)[..., None], counts


def paint_instances(values: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """B x n x C per-instance vectors -> B x C x H x W map holding each pixel's instance vector."""
    with torch.autocast(values.device.type, enabled=False):
        member = nn.functional.one_hot(index.long(), values.shape[1]).float()
        return torch.einsum("bnc,bhwn->bchw", values.float(), member)


class FeatureEncoder(nn.Module):
    """Encoder-decoder image -> ``feat_num`` channels in [-1, 1] (c7s1-nef, ``n_downsample`` stride-2 convolutions,
    as many transposed convolutions, c7s1-feat_num, tanh), followed by instance-wise average pooling: every pixel
    gets the mean feature of its instance, so a feature map holds one vector per instance."""

    def __init__(self, in_ch: int = 3, feat_num: int = 3, nef: int = 16, n_downsample: int = 4,
                 norm: str = "instance", padding: str = "reflect") -> None:
        super().__init__()
        if feat_num < 1 or nef < 1 or n_downsample < 1:
            raise ValueError(f"feat_num, nef and n_downsample must be >= 1 (got {feat_num}, {nef}, {n_downsample})")
        layers = _c7s1(in_ch, nef, norm, padding)
        ch = nef
        for _ in range(n_downsample):
            layers += _down(ch, ch * 2, norm)
            ch *= 2
        for _ in range(n_downsample):
            layers += _up(ch, ch // 2, norm)
            ch //= 2
        self.model = nn.Sequential(*layers, *_head(nef, feat_num, padding))
        self.feat_num = feat_num
        self.multiple = 2**n_downsample
        self.min_size = max(self.multiple, 4)  # 3-pixel reflection padding at full size
        init_weights(self)

    def instance_features(self, image: torch.Tensor, index: torch.Tensor, n: int
                          ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B x n x feat_num per-instance means, B x n pixel counts) of ``image`` for the ``n`` instances of
        ``index``."""
        return instance_means(self.model(image), index, n)

    def forward(self, image: torch.Tensor, index: torch.Tensor, n: int) -> torch.Tensor:
        """The instance-wise average-pooled feature map, B x feat_num x H x W."""
        means, _ = self.instance_features(image, index, n)
        return paint_instances(means, index)
