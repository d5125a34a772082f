"""Image-to-image generators: the ResNet generator of CycleGAN and the U-Net generator of pix2pix.

Both end in ``tanh`` (outputs in [-1, 1]), are fully convolutional and initialise their weights from torch's global
RNG (N(0, 0.02) as in the reference implementations), so ``torch.manual_seed`` fixes them. ``multiple`` is the factor
that input height and width must be divisible by; ``min_size`` the smallest side they can process.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

NORMS = ("instance", "batch", "none")
PADDINGS = ("reflect", "replicate", "zero")
# "transpose": stride-2 transposed convolutions (the reference); "resize": nearest-neighbour x2 then a 3x3
# convolution, whose kernel overlaps evenly everywhere and so cannot draw checkerboards (Odena et al., 2016)
UPSAMPLINGS = ("transpose", "resize")


def norm_layer(norm: str) -> Callable[[int], nn.Module]:
    """A factory ``channels -> normalisation layer``.

    ``instance``: InstanceNorm2d without affine parameters or running statistics (CycleGAN); ``batch``: BatchNorm2d
    with affine parameters and running statistics (pix2pix); ``none``: identity.
    """
    if norm == "instance":
        return lambda ch: nn.InstanceNorm2d(ch, affine=False, track_running_stats=False)
    if norm == "batch":
        return lambda ch: nn.BatchNorm2d(ch, affine=True, track_running_stats=True)
    if norm == "none":
        return lambda ch: nn.Identity()
    raise ValueError(f"unknown norm {norm!r} (valid: {', '.join(NORMS)})")


def _uses_bias(norm: str) -> bool:
    # BatchNorm has its own shift, so the convolution before it needs no bias; instance norm here has no affine part.
    return norm != "batch"


def init_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """Convolution / linear weights ~ N(0, gain), biases 0; BatchNorm scale ~ N(1, gain), shift 0."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


def _pad(padding: str, amount: int) -> tuple[list[nn.Module], int]:
    """Explicit padding layers and the ``padding=`` value for the following convolution."""
    if padding == "reflect":
        return [nn.ReflectionPad2d(amount)], 0
    if padding == "replicate":
        return [nn.ReplicationPad2d(amount)], 0
    if padding == "zero":
        return [], amount
    raise ValueError(f"unknown padding {padding!r} (valid: {', '.join(PADDINGS)})")


class ResnetBlock(nn.Module):
    """x + (pad, conv3x3, norm, ReLU, pad, conv3x3, norm)(x)."""

    def __init__(self, ch: int, norm: str, padding: str) -> None:
        super().__init__()
        make_norm, bias = norm_layer(norm), _uses_bias(norm)
        pad1, p1 = _pad(padding, 1)
        pad2, p2 = _pad(padding, 1)
        self.body = nn.Sequential(
            *pad1, nn.Conv2d(ch, ch, 3, padding=p1, bias=bias), make_norm(ch), nn.ReLU(True),
            *pad2, nn.Conv2d(ch, ch, 3, padding=p2, bias=bias), make_norm(ch),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResnetGenerator(nn.Module):
    """CycleGAN's generator: c7s1-ngf, two stride-2 downsamplings, ``n_blocks`` residual blocks, two stride-2
    upsamplings (``upsample``: transposed convolutions, or resize-convolutions), c7s1-out_ch, tanh.
    ``n_blocks=9`` is the 256x256 generator of the paper."""

    n_down = 2

    def __init__(self, in_ch: int, out_ch: int, ngf: int = 64, n_blocks: int = 9, norm: str = "instance",
                 padding: str = "reflect", upsample: str = "transpose") -> None:
        super().__init__()
        if n_blocks < 0 or ngf < 1:
            raise ValueError(f"n_blocks must be >= 0 and ngf >= 1 (got {n_blocks}, {ngf})")
        if upsample not in UPSAMPLINGS:
            raise ValueError(f"unknown upsample {upsample!r} (valid: {', '.join(UPSAMPLINGS)})")
        make_norm, bias = norm_layer(norm), _uses_bias(norm)
        self.multiple = 2**self.n_down
        self.min_size = 2 * self.multiple  # 3-pixel reflection at full size, 1-pixel at the bottleneck
        pad_in, p_in = _pad(padding, 3)
        layers: list[nn.Module] = [*pad_in, nn.Conv2d(in_ch, ngf, 7, padding=p_in, bias=bias), make_norm(ngf),
                                   nn.ReLU(True)]
        ch = ngf
        for _ in range(self.n_down):
            layers += [nn.Conv2d(ch, ch * 2, 3, stride=2, padding=1, bias=bias), make_norm(ch * 2), nn.ReLU(True)]
            ch *= 2
        layers += [ResnetBlock(ch, norm, padding) for _ in range(n_blocks)]
        for _ in range(self.n_down):
            if upsample == "transpose":
                layers.append(nn.ConvTranspose2d(ch, ch // 2, 3, stride=2, padding=1, output_padding=1, bias=bias))
            else:
                pad_up, p_up = _pad(padding, 1)
                layers += [nn.Upsample(scale_factor=2, mode="nearest"), *pad_up,
                           nn.Conv2d(ch, ch // 2, 3, padding=p_up, bias=bias)]
            layers += [make_norm(ch // 2), nn.ReLU(True)]
            ch //= 2
        pad_out, p_out = _pad(padding, 3)
        layers += [*pad_out, nn.Conv2d(ch, out_ch, 7, padding=p_out), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class _UnetLevel(nn.Module):
    """One level of the U-Net: down(x) -> inner -> up, concatenated with x (skip), except at the outermost level.

    The down path's LeakyReLU is not in place, so the skip carries x itself; the next decoder ReLU makes that the
    same as the reference's in-place variant (ReLU(LeakyReLU(x)) == ReLU(x)).
    """

    def __init__(self, down: nn.Module, inner: nn.Module | None, up: nn.Module, outermost: bool) -> None:
        super().__init__()
        self.down, self.inner, self.up, self.outermost = down, inner, up, outermost

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.down(x)
        if self.inner is not None:
            y = self.inner(y)
        y = self.up(y)
        return y if self.outermost else torch.cat([x, y], 1)


class UnetGenerator(nn.Module):
    """pix2pix's U-Net: ``num_downs`` stride-2 4x4 convolutions (LeakyReLU 0.2, norm), mirrored by transposed
    convolutions (ReLU, norm) with skip connections, tanh output. Channels ngf, 2ngf, 4ngf, then 8ngf.

    ``num_downs=8`` is the U-Net 256 of the paper (a 256x256 input reaches 1x1). Dropout (p 0.5) sits in up to
    ``n_dropout`` decoder levels right above the bottleneck, never in the innermost or the two outermost levels; at
    ``num_downs=8`` that is the three dropout layers of pix2pix.
    """

    def __init__(self, in_ch: int, out_ch: int, num_downs: int = 8, ngf: int = 64, norm: str = "batch",
                 dropout: bool = True, n_dropout: int = 3) -> None:
        super().__init__()
        if num_downs < 2 or ngf < 1:
            raise ValueError(f"num_downs must be >= 2 and ngf >= 1 (got {num_downs}, {ngf})")
        make_norm, bias = norm_layer(norm), _uses_bias(norm)
        self.multiple = 2**num_downs
        self.min_size = self.multiple
        chans = [ngf * min(2**i, 8) for i in range(num_downs)]  # output channels of each level's down convolution
        dropped = set(range(max(2, num_downs - 1 - n_dropout), num_downs - 1)) if dropout else set()
        inner: nn.Module | None = None
        for i in reversed(range(num_downs)):
            outermost, innermost = i == 0, i == num_downs - 1
            c_in = in_ch if outermost else chans[i - 1]
            c_mid = chans[i]
            c_up_in = c_mid if innermost else 2 * c_mid
            c_up_out = out_ch if outermost else c_in
            conv_down = nn.Conv2d(c_in, c_mid, 4, stride=2, padding=1, bias=bias)
            if outermost:
                down: list[nn.Module] = [conv_down]
                up: list[nn.Module] = [nn.ReLU(True), nn.ConvTranspose2d(c_up_in, c_up_out, 4, stride=2, padding=1),
                                       nn.Tanh()]
            else:
                down = [nn.LeakyReLU(0.2), conv_down] + ([] if innermost else [make_norm(c_mid)])
                up = [nn.ReLU(True), nn.ConvTranspose2d(c_up_in, c_up_out, 4, stride=2, padding=1, bias=bias),
                      make_norm(c_up_out)]
                if i in dropped:
                    up.append(nn.Dropout(0.5))
            inner = _UnetLevel(nn.Sequential(*down), inner, nn.Sequential(*up), outermost)
        assert inner is not None
        self.model = inner
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)
