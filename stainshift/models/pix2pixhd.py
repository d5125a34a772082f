"""pix2pixHD (Wang et al., 2018) from masks, as paper 001 uses it for red-cell fields: a label map in, an image out.

Trained on a domain's images with their own masks (``DataRegime.PAIRED_MASK``). The generator sees the mask encoded by
:mod:`stainshift.synth.encoding` (one-hot regions, the region-edge channel, optional noise) and, with the feature
encoder, a style feature map; ``num_d`` conditional discriminators at successively halved sizes judge (mask, image)
pairs. Objective: LSGAN + ``lambda_feat`` x discriminator feature matching (each of the ``num_d`` discriminators'
intermediate layers, L1 to the real image's detached features, weighted 4 / (n_layers_d + 1) and 1 / num_d) +
``lambda_vgg`` x a perceptual L1 over five stages of a frozen network (weights 1/32, 1/16, 1/8, 1/4, 1).

Perceptual loss: nothing is downloaded. ``perceptual=None`` (every preset) trains without a perceptual term; a path
to a VGG19 state dict (torchvision's ``vgg19`` keys, ``features.*``; relu1_1 ... relu5_1, ImageNet-normalised input)
or to a stainshift classifier ``model.pt`` (its stem and four ResNet stages) turns it on. The file's hash is recorded
in the options (``perceptual_hash``) when training starts and checked when the run resumes. The loss network is not
one of the model's networks: it is not trained, not saved, and reloaded from the path.

Styles: the encoder (an encoder-decoder image -> ``feat_num`` channels) is average-pooled per instance; the sites'
masks label one cell per image without instance ids, so in training the instances are the regions of each image
(background, cytoplasm, nucleus). At generation a field's instance map (``translate_instances``, which ``synth
generate`` calls with the masks' cell ids) makes each region of each cell an instance with its own style, and adds
the borders between touching cells to the edge channel, as the reference's instance edges do. While training, the
epoch's real crops are kept (up to ``STYLE_CROPS``); at the end of every epoch the epoch's final encoder encodes
them (as the reference encodes its training set with the trained encoder), and K-means (``n_clusters`` per region,
fewer when there are fewer distinct samples; no area filter, so a small cell counts like a large one) turns their
per-region means into style clusters, stored in the translator (every epoch file carries its own, largest cluster
first; under DDP each rank fits on its own share of the epoch, and rank 0's clusters are saved). At inference
each region of each image (of each cell, with an instance map) takes a random cluster (torch's
global RNG), or cluster ``style`` for all; before any clustering the style features are zero.

Local enhancer: ``n_local_enhancers=1`` wraps the global generator (which keeps its ``ngf``; the enhancer's own
layers have ngf / 2, so the reference's 64 / 32 recipe is ``ngf=64`` in both runs) and sees the mask at full size
while the global generator sees it halved. Train the global model first, then ``--init-from`` its run or epoch file:
its generator loads into the enhancer's global generator (discriminators, encoder and styles too where their shapes
fit); for the first ``niter_fix_global`` epochs only the enhancer's own layers (and the encoder) train. The
reference recipe: ``n_local_enhancers=1, num_d=3, niter_fix_global=20`` on images twice the global run's size.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from stainshift.errors import StainshiftError
from stainshift.losses import GAN_MODES, GANLoss, l1_loss
from stainshift.models.base import ModelOptions, TranslationModel, Translator, side_padding
from stainshift.models.kinds import DataRegime, EpochScoring
from stainshift.models.mask_input import MaskInputOptions
from stainshift.nets.generators import NORMS
from stainshift.nets.pix2pixhd_nets import (
    FeatureEncoder,
    GlobalGenerator,
    LocalEnhancer,
    MultiscaleDiscriminator,
    paint_instances,
)
from stainshift.synth.encoding import N_REGIONS, input_channels, regions

PERCEPTUAL_WEIGHTS = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)  # reference VGGLoss, shallow to deep
REGION_NAMES = ("background", "cytoplasm", "nucleus")
KMEANS_SEED, KMEANS_INIT = 0, 4
STYLE_CROPS = 1024  # real crops of an epoch its style clusters are fitted on (memory: 1024 x 4 x crop^2 bytes)
_VGG19_STAGES = ((0, 2), (2, 7), (7, 12), (12, 21), (21, 30))  # torchvision vgg19.features: up to relu1_1 ... relu5_1
_PERCEPTUAL_FIX = ("pass perceptual=PATH of a VGG19 state dict (torchvision vgg19 keys) or of a stainshift "
                   "classifier model.pt, or leave perceptual unset for no perceptual loss")


@dataclass(frozen=True, kw_only=True)
class Pix2PixHDOptions(MaskInputOptions):
    """pix2pixHD options; the defaults are the reference's (NVIDIA pix2pixHD, ``paper`` preset) except the
    perceptual loss, which needs a local weights file (``perceptual``)."""

    ngf: int = 64                   # filters of the global generator's first layer
    n_downsample_global: int = 4
    n_blocks_global: int = 9
    n_local_enhancers: int = 0      # 0: the global generator alone; 1: a local enhancer around it
    n_blocks_local: int = 3
    niter_fix_global: int = 0       # epochs during which only the local enhancer's own layers train
    norm: str = "instance"
    ndf: int = 64
    n_layers_d: int = 3
    num_d: int = 2                  # discriminators at full, 1/2, 1/4 ... size
    gan_mode: str = "lsgan"
    lambda_feat: float = 10.0       # discriminator feature matching
    lambda_vgg: float = 10.0        # perceptual loss (only with `perceptual`)
    perceptual: str | None = None   # VGG19 state dict or stainshift classifier file; None: no perceptual loss
    perceptual_hash: str | None = None  # set when training starts: the perceptual file's hash, checked on resume
    use_encoder: bool = True        # feature encoder + per-region style clusters
    feat_num: int = 3
    nef: int = 16
    n_downsample_e: int = 4
    n_clusters: int = 10            # K-means style clusters per region
    edges: bool = True              # region-boundary channel (the reference's instance edge map)

    def __post_init__(self) -> None:
        if isinstance(self.perceptual, Path):  # checkpoints are loaded with weights_only: keep plain strings
            object.__setattr__(self, "perceptual", str(self.perceptual))
        super().__post_init__()

    def check(self) -> list[str]:
        problems = super().check()
        for name, valid in (("norm", NORMS), ("gan_mode", GAN_MODES)):
            if getattr(self, name) not in valid:
                problems.append(f"{name} {getattr(self, name)!r} is not one of {', '.join(valid)}")
        if min(self.ngf, self.ndf, self.n_layers_d, self.num_d, self.n_downsample_global) < 1:
            problems.append("ngf, ndf, n_layers_d, num_d and n_downsample_global must be >= 1")
        if min(self.n_blocks_global, self.n_blocks_local, self.niter_fix_global) < 0:
            problems.append("n_blocks_global, n_blocks_local and niter_fix_global must be >= 0")
        if self.n_local_enhancers not in (0, 1):
            problems.append(f"n_local_enhancers must be 0 or 1 (got {self.n_local_enhancers})")
        elif self.n_local_enhancers and self.ngf % 2:
            problems.append(f"ngf must be even with a local enhancer (its layers have ngf / 2; got {self.ngf})")
        if self.niter_fix_global and not self.n_local_enhancers:
            problems.append("niter_fix_global only applies to a local enhancer: set n_local_enhancers=1 or 0 epochs")
        if self.use_encoder and min(self.feat_num, self.nef, self.n_downsample_e, self.n_clusters) < 1:
            problems.append("feat_num, nef, n_downsample_e and n_clusters must be >= 1 with the encoder")
        if self.lambda_feat < 0 or self.lambda_vgg < 0:
            problems.append("lambda_feat and lambda_vgg must be >= 0")
        if self.perceptual is not None and (not isinstance(self.perceptual, str) or not self.perceptual):
            problems.append(f"perceptual must be a file path or None (got {self.perceptual!r})")
        if self.perceptual_hash is not None and self.perceptual is None:
            problems.append("perceptual_hash without a perceptual file")
        if not problems:
            if self.crop_size % self.multiple:
                problems.append(f"crop_size {self.crop_size} must be a multiple of {self.multiple} (downsamplings "
                                "of the generator, encoder and discriminator pyramid)")
            elif self.crop_size < self.min_size:
                problems.append(f"crop_size {self.crop_size} must be >= {self.min_size}")
        return problems

    @property
    def multiple(self) -> int:
        """What crop sides must be divisible by."""
        generator = 2**(self.n_downsample_global + self.n_local_enhancers)
        encoder = 2**self.n_downsample_e if self.use_encoder else 1
        return max(generator, encoder, 2**(self.num_d - 1))

    @property
    def min_size(self) -> int:
        return 2 * 2**(self.n_downsample_global + self.n_local_enhancers)

    @property
    def condition_channels(self) -> int:
        """The encoded mask the discriminators see: regions and edges (no noise, no style features)."""
        return input_channels(self.mask_input, self.edges, 0)

    @property
    def generator_channels(self) -> int:
        return input_channels(self.mask_input, self.edges, self.noise_channels) + self.feat_num * self.use_encoder


# -- losses ---------------------------------------------------------------------------------------------------------
def feature_matching_loss(fake: list[list[torch.Tensor]], real: list[list[torch.Tensor]], n_layers_d: int
                          ) -> torch.Tensor:
    """Sum over discriminators i and their layers j but the last (the logits) of
    (1 / num_d) (4 / (n_layers_d + 1)) mean|fake[i][j] - real[i][j]|; the real features are detached."""
    weight = 4.0 / (n_layers_d + 1) / len(fake)
    total = torch.zeros((), device=fake[0][0].device)
    for fake_i, real_i in zip(fake, real, strict=True):
        for f, r in zip(fake_i[:-1], real_i[:-1], strict=True):
            total = total + weight * l1_loss(f, r.detach())
    return total


class _VGG19Stages(nn.Module):
    """torchvision's VGG19 convolutional part cut into five slices ending at relu1_1 ... relu5_1."""

    def __init__(self, state: dict[str, torch.Tensor], path: Path) -> None:
        super().__init__()
        from torchvision.models.vgg import cfgs, make_layers

        with torch.random.fork_rng(devices=[]):  # the fresh init is overwritten: leave the training RNG alone
            features = make_layers(cfgs["E"])[:_VGG19_STAGES[-1][1]]  # = vgg19(weights=None).features[:30]
        wanted = {f"features.{k}": v for k, v in features.state_dict().items()}
        if not any(k.startswith("features.") for k in state):  # a state dict of `vgg19().features` alone
            state = {f"features.{k}": v for k, v in state.items()}
        bad = [k for k, v in wanted.items() if k not in state or tuple(state[k].shape) != tuple(v.shape)]
        if bad:
            raise StainshiftError(f"{path}: not VGG19 weights ({len(bad)} of its layers missing or mis-shaped, e.g. "
                                  f"{bad[0]}); {_PERCEPTUAL_FIX}")
        features.load_state_dict({k.removeprefix("features."): state[k] for k in wanted})
        self.slices = nn.ModuleList(features[a:b] for a, b in _VGG19_STAGES)
        self.register_buffer("mean", torch.tensor((0.485, 0.456, 0.406)).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor((0.229, 0.224, 0.225)).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, h = [], (x - self.mean) / self.std
        for stage in self.slices:
            h = stage(h)
            out.append(h)
        return out


class _ClassifierStages(nn.Module):
    """A stainshift classifier's stem and four ResNet stages (it normalises its input itself)."""

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        clf = self.classifier
        return clf.net.forward_intermediates(clf.normalize(x), intermediates_only=True)


class PerceptualLoss(nn.Module):
    """sum_i w_i mean|f_i(fake) - f_i(real)| over the five stages of a frozen network, images in [0, 1].

    Always in eval mode (a classifier's batch norm statistics must not move) and never trained."""

    def __init__(self, stages: nn.Module, source: str) -> None:
        super().__init__()
        self.stages, self.source = stages, source
        for p in self.stages.parameters():
            p.requires_grad_(False)
        self.stages.eval()

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)

    def forward(self, fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        fake_f, real_f = self.stages(fake), self.stages(real)
        total = torch.zeros((), device=fake.device)
        for w, f, r in zip(PERCEPTUAL_WEIGHTS, fake_f, real_f, strict=True):
            total = total + w * l1_loss(f, r.detach())
        return total


def load_perceptual(path: str | Path) -> PerceptualLoss:
    """The perceptual loss of a VGG19 state-dict file or a stainshift classifier file (one-line errors)."""
    from stainshift.classify.models import KIND, load_classifier

    path = Path(path)
    if not path.is_file():
        raise StainshiftError(f"{path}: perceptual loss weights not found; {_PERCEPTUAL_FIX}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, foreign or pickled-code file: the user's to fix
        raise StainshiftError(f"{path}: perceptual loss weights unreadable ({type(exc).__name__}); "
                              f"{_PERCEPTUAL_FIX}") from None
    if not isinstance(obj, dict):
        raise StainshiftError(f"{path}: not a state dict nor a stainshift classifier; {_PERCEPTUAL_FIX}")
    if obj.get("kind") == KIND:
        return PerceptualLoss(_ClassifierStages(load_classifier(path)), "classifier")
    state = obj["state_dict"] if isinstance(obj.get("state_dict"), dict) else obj
    return PerceptualLoss(_VGG19Stages(state, path), "vgg19")


def _with_perceptual_hash(o: Pix2PixHDOptions) -> Pix2PixHDOptions:
    """Options recording the perceptual file's hash; a recorded hash must still match the file."""
    if o.perceptual is None:
        return o
    from stainshift.train.checkpoints import file_hash

    path = Path(o.perceptual)
    if not path.is_file():
        raise StainshiftError(f"{path}: perceptual loss weights not found; {_PERCEPTUAL_FIX}")
    digest = file_hash(path)
    if o.perceptual_hash is None:
        return dataclasses.replace(o, perceptual_hash=digest)
    if o.perceptual_hash != digest:
        raise StainshiftError(f"{path}: the perceptual loss file changed since the run started (hash {digest}, "
                              f"recorded {o.perceptual_hash}); put the original back or start a new run")
    return o


# -- styles ---------------------------------------------------------------------------------------------------------
class StyleBank(nn.Module):
    """Per-region K-means centres of the encoder's features: ``centres`` (regions x n_clusters x feat_num, rows past
    ``counts[r]`` unused) and ``counts`` (clusters per region, 0 before any clustering), as buffers."""

    def __init__(self, n_regions: int, n_clusters: int, feat_num: int) -> None:
        super().__init__()
        self.register_buffer("centres", torch.zeros(n_regions, n_clusters, feat_num))
        self.register_buffer("counts", torch.zeros(n_regions, dtype=torch.long))

    @property
    def n_styles(self) -> int:
        """How many styles every clustered region has (valid ``style`` values are 0 .. n_styles - 1)."""
        present = self.counts[self.counts > 0]
        return int(present.min()) if len(present) else 0

    @torch.no_grad()
    def fit(self, samples: list[list[torch.Tensor]]) -> None:
        """K-means per region of its sample vectors (lists of N x feat_num tensors); clusters by size, largest
        first. Deterministic: a fixed seed and a fixed number of restarts."""
        from sklearn.cluster import KMeans

        if not any(samples):  # an epoch that saw no images keeps the clusters it had
            return
        self.centres.zero_()
        self.counts.zero_()
        for r, chunks in enumerate(samples):
            if not chunks:
                continue
            x = torch.cat(chunks).double().numpy()
            k = min(self.centres.shape[1], len(np.unique(x, axis=0)))
            km = KMeans(n_clusters=k, n_init=KMEANS_INIT, random_state=KMEANS_SEED).fit(x)
            order = np.argsort(-np.bincount(km.labels_, minlength=k), kind="stable")
            self.centres[r, :k] = torch.from_numpy(km.cluster_centers_[order]).to(self.centres)
            self.counts[r] = k

    def _check_style(self, style: int) -> None:
        if not 0 <= style < self.n_styles:
            have = "no style clusters yet (train at least one epoch)" if not self.n_styles else \
                f"styles 0 to {self.n_styles - 1}"
            raise StainshiftError(f"style {style}: this pix2pixhd translator has {have}")

    def group_vectors(self, group_regions: torch.Tensor, style: int | None) -> torch.Tensor:
        """G x feat_num style vectors for G pixel groups (cells' regions) whose region indices are given: cluster
        ``style`` of each group's region, or a random cluster per group (torch's global RNG)."""
        counts = self.counts.cpu()[group_regions.cpu()]
        if style is None:
            pick = (torch.rand(len(counts)) * counts).long()
        else:
            self._check_style(style)
            pick = torch.full((len(counts),), style)
        pick = torch.minimum(pick, (counts - 1).clamp_min(0)).to(self.centres.device)
        regions_ = group_regions.to(self.centres.device)
        return self.centres[regions_, pick] * (counts > 0)[:, None].to(self.centres)

    def vectors(self, batch: int, style: int | None) -> torch.Tensor:
        """B x regions x feat_num style vectors: cluster ``style`` of every region, or a random cluster per image and
        region (torch's global RNG); zeros for regions without clusters."""
        n = len(self.counts)
        return self.group_vectors(torch.arange(n).repeat(batch), style).reshape(batch, n, -1)


# -- translator -----------------------------------------------------------------------------------------------------
def _padded(x: torch.Tensor, multiple: int, min_size: int, fn: Callable[[torch.Tensor], torch.Tensor]
            ) -> torch.Tensor:
    """``fn`` of ``x`` reflection-padded to a multiple of ``multiple`` (and at least ``min_size``), cropped back."""
    h, w = x.shape[-2:]
    (top, bottom), (left, right) = (side_padding(n, multiple, min_size) for n in (h, w))
    if not (top or bottom or left or right):
        return fn(x)
    mode = "reflect" if max(left, right) < w and max(top, bottom) < h else "replicate"
    return fn(F.pad(x, (left, right, top, bottom), mode=mode))[..., top: top + h, left: left + w]


class Pix2PixHDTranslator(Translator):
    """Label map (B x 1 x H x W mask values) -> image in [0, 1].

    ``style``: None draws a style cluster per image and region from torch's global RNG; K uses cluster K of every
    region (``n_styles`` says how many there are). :meth:`style_from` encodes the style of a real image instead, and
    :meth:`generate` paints a label map with given style features.
    """

    options: Pix2PixHDOptions

    def __init__(self, generator: GlobalGenerator | LocalEnhancer, encoder: FeatureEncoder | None,
                 styles: StyleBank | None, options: Pix2PixHDOptions) -> None:
        nets = [generator] + ([encoder] if encoder is not None else [])
        super().__init__(Pix2PixHD.name, options, max(n.multiple for n in nets), max(n.min_size for n in nets),
                         in_channels=1)
        self.generator, self.encoder, self.styles = generator, encoder, styles
        self.style: int | None = None

    @property
    def n_styles(self) -> int:
        return 0 if self.styles is None else self.styles.n_styles

    reads_instances = True

    def _paint(self, labels: torch.Tensor, features: torch.Tensor | None,
               instances: torch.Tensor | None = None) -> torch.Tensor:
        o = self.options
        x = o.encode(labels, instances)
        if features is not None:
            x = torch.cat([x, features.to(x.dtype)], 1)
        return self.generator(x).float().add(1).div(2).clamp(0, 1)

    def translate_padded(self, x: torch.Tensor) -> torch.Tensor:
        if self.styles is None:
            return self._paint(x, None)
        region = regions(x)
        return self._paint(x, paint_instances(self.styles.vectors(len(x), self.style), region))

    def translate_instances(self, labels: torch.Tensor, instances: torch.Tensor) -> torch.Tensor:
        """A label map (B x 1 x H x W) with its cells' ids (B x H x W, 0 = no cell; ids on background pixels, such
        as red cells', are ignored), as pix2pixHD reads instance maps: where two cells touch, the edge channel marks
        the border, and every region of every cell draws its own style (``style`` K: cluster K for all). The models
        learn from single-cell masks, where a cell and its regions coincide, so with a fixed style this is
        :meth:`forward` there; on fields it keeps touching cells apart."""
        if instances.shape != (labels.shape[0], *labels.shape[-2:]):
            raise StainshiftError(f"translate_instances takes a Bx1xHxW label map and a BxHxW id map (got shapes "
                                  f"{tuple(labels.shape)}, {tuple(instances.shape)})")

        def paint(both: torch.Tensor) -> torch.Tensor:
            x = both[:, :1]
            region = regions(x)
            ids = torch.where(region > 0, both[:, 1].long(), 0)  # cells the label map draws (not red cells)
            if self.styles is None:
                return self._paint(x, None, ids)
            batch = torch.arange(len(x), device=x.device)[:, None, None]
            group = (batch * (int(ids.max()) + 1) + ids) * N_REGIONS + region  # one group per image, cell, region
            keys, inverse = torch.unique(group, return_inverse=True)
            vectors = self.styles.group_vectors(keys % N_REGIONS, self.style)  # G x feat_num
            return self._paint(x, vectors[inverse].permute(0, 3, 1, 2), ids)

        if labels.shape[0] == 0:
            return labels.new_zeros((0, 3, *labels.shape[-2:]))
        _, compact = torch.unique(instances, return_inverse=True)  # small ids, exact through float padding
        both = torch.cat([labels.float(), compact[:, None].float()], 1)
        return _padded(both, self.multiple, self.min_size, paint)

    def style_from(self, image: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The encoder's per-region mean features of a real image (B x 3 x H x W in [0, 1]) over the regions of its
        label map (B x 1 x H x W), as a B x feat_num x H x W map (the reference's encoded features)."""
        if self.encoder is None:
            raise StainshiftError("this pix2pixhd model has no feature encoder (use_encoder=False): it has no styles")
        if image.shape[0] != labels.shape[0] or image.shape[-2:] != labels.shape[-2:] or image.shape[1] != 3:
            raise StainshiftError(f"style_from takes a Bx3xHxW image and its Bx1xHxW label map (got shapes "
                                  f"{tuple(image.shape)}, {tuple(labels.shape)})")

        def encode_style(both: torch.Tensor) -> torch.Tensor:
            return self.encoder(both[:, :3] * 2 - 1, regions(both[:, 3:]), N_REGIONS)

        return _padded(torch.cat([image.float(), labels.float()], 1), self.multiple, self.min_size, encode_style)

    def generate(self, labels: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """The image of a label map (B x 1 x H x W) with style features (B x feat_num x H x W, e.g. from
        :meth:`style_from`)."""
        if features.shape[0] != labels.shape[0] or features.shape[-2:] != labels.shape[-2:]:
            raise StainshiftError(f"generate takes a label map and features of the same size (got shapes "
                                  f"{tuple(labels.shape)}, {tuple(features.shape)})")
        return _padded(torch.cat([labels.float(), features.float()], 1), self.multiple, self.min_size,
                       lambda both: self._paint(both[:, :1], both[:, 1:]))


# -- model ----------------------------------------------------------------------------------------------------------
class Pix2PixHD(TranslationModel):
    """Mask -> image pix2pixHD; ``train_step`` reads ``batch["image"]`` (RGB in [0, 1]) and ``batch["mask"]``."""

    name = "pix2pixhd"
    data_regime = DataRegime.PAIRED_MASK
    scoring = EpochScoring.GENERATION
    options_type = Pix2PixHDOptions
    options: Pix2PixHDOptions
    file_options = ("perceptual",)

    @classmethod
    def presets(cls) -> dict[str, ModelOptions]:
        return {
            # the reference (global generator 64 / 4 / 9, two 3-layer discriminators, encoder, 10 clusters), at the
            # 286 -> 256 crops of the other models; perceptual loss off until a weights file is passed
            "paper": Pix2PixHDOptions(),
            # 2 CPU cores: 96 px crops, a global generator of 32 filters with 3 downsamplings and 4 blocks
            "cpu": Pix2PixHDOptions(ngf=32, n_downsample_global=3, n_blocks_global=4, ndf=32, n_layers_d=3, num_d=2,
                                    nef=16, n_downsample_e=3, load_size=108, crop_size=96, batch_size=2, epochs=10,
                                    epochs_decay=10, keep_epochs=(1, 2, 3, 5, 10, 15, 20)),
            # the tests' size. One style cluster per region: the contract test compares two calls of a translator,
            # which draw their styles independently
            "tiny": Pix2PixHDOptions(ngf=8, n_downsample_global=2, n_blocks_global=1, ndf=8, n_layers_d=2, num_d=2,
                                     nef=4, n_downsample_e=2, n_clusters=3, load_size=36, crop_size=32,
                                     batch_size=2, epochs=2, epochs_decay=0, keep_epochs=(1, 2)),
        }

    @staticmethod
    def _generator(o: Pix2PixHDOptions) -> GlobalGenerator | LocalEnhancer:
        if o.n_local_enhancers:
            return LocalEnhancer(o.generator_channels, 3, o.ngf // 2, o.n_downsample_global, o.n_blocks_global,
                                 o.n_blocks_local, o.norm)
        return GlobalGenerator(o.generator_channels, 3, o.ngf, o.n_downsample_global, o.n_blocks_global, o.norm)

    @staticmethod
    def _encoder(o: Pix2PixHDOptions) -> FeatureEncoder | None:
        return FeatureEncoder(3, o.feat_num, o.nef, o.n_downsample_e, o.norm) if o.use_encoder else None

    @staticmethod
    def _styles(o: Pix2PixHDOptions) -> StyleBank | None:
        return StyleBank(N_REGIONS, o.n_clusters, o.feat_num) if o.use_encoder else None

    def __init__(self, options: Pix2PixHDOptions) -> None:
        if isinstance(options, Pix2PixHDOptions):
            options = _with_perceptual_hash(options)
        super().__init__(options)
        o = self.options
        self.G = self._generator(o)
        self.D = MultiscaleDiscriminator(o.condition_channels + 3, o.ndf, o.n_layers_d, o.num_d, o.norm)
        self.E = self._encoder(o)
        self.styles = self._styles(o)
        self.gan_loss = GANLoss(o.gan_mode)
        self.perceptual = load_perceptual(o.perceptual) if o.perceptual is not None else None
        generator = [self.G] + ([self.E] if self.E is not None else [])
        self._setup_optimizers({"G": self._params(*generator), "D": self._params(self.D)})
        # this epoch's real crops (uint8 images, region maps) for the style clusters; empty at every epoch boundary
        self._style_crops: list[tuple[torch.Tensor, torch.Tensor]] = []

    def networks(self) -> dict[str, nn.Module]:
        nets: dict[str, nn.Module] = {"G": self.G, "D": self.D}
        if self.E is not None and self.styles is not None:
            nets.update(E=self.E, styles=self.styles)
        return nets

    @classmethod
    def new_translator(cls, options: ModelOptions) -> Translator:
        assert isinstance(options, Pix2PixHDOptions)
        return Pix2PixHDTranslator(cls._generator(options), cls._encoder(options), cls._styles(options), options)

    def translator(self) -> Translator:
        return Pix2PixHDTranslator(self.G, self.E, self.styles, self.options)

    # -- training --------------------------------------------------------------------------------------------------
    def global_frozen(self) -> bool:
        """Whether this epoch trains only the local enhancer's own layers (the first ``niter_fix_global``)."""
        return bool(self.options.n_local_enhancers) and self.schedulers["G"].last_epoch < self.options.niter_fix_global

    def generator_losses(self, condition: torch.Tensor, fake: torch.Tensor, real: torch.Tensor
                         ) -> dict[str, torch.Tensor]:
        """G_gan, G_feat and (with a perceptual file) G_vgg of generated images; images in [-1, 1], ``condition``
        the encoded mask the discriminators see."""
        o = self.options
        pred_fake = self.D(torch.cat([condition, fake.to(condition.dtype)], 1))
        losses = {"G_gan": self.gan_loss(pred_fake, True, False)}
        if o.lambda_feat > 0:
            with torch.no_grad():
                pred_real = self.D(torch.cat([condition, real], 1))
            losses["G_feat"] = feature_matching_loss(pred_fake, pred_real, o.n_layers_d) * o.lambda_feat
        if self.perceptual is not None and o.lambda_vgg > 0:
            losses["G_vgg"] = self.perceptual((fake.float() + 1) / 2, (real + 1) / 2) * o.lambda_vgg
        return losses

    @torch.enable_grad()
    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        o = self.options
        real = self._batch(batch, "image") * 2 - 1
        labels = self._batch(batch, "mask", channels=1)
        self.train()
        x = o.encode(labels)
        condition = x[:, :o.condition_channels]
        frozen = self.global_frozen()
        if frozen:  # no gradients, so Adam leaves the global generator's weights (and moments) alone
            self._requires_grad([self.G.global_generator], False)
        with self.autocast():
            if self.E is not None:
                region = regions(labels)
                means, _ = self.E.instance_features(real, region, N_REGIONS)
                self._collect(real, region)
                x = torch.cat([x, paint_instances(means, region).to(x.dtype)], 1)
            fake = self.G(x)

        # discriminators: real (mask, image) pairs vs generated ones
        self._requires_grad([self.D], True)
        self.optimizers["D"].zero_grad(set_to_none=True)
        with self.autocast():
            loss_D_fake = self.gan_loss(self.D(torch.cat([condition, fake.detach().to(condition.dtype)], 1)), False)
            loss_D_real = self.gan_loss(self.D(torch.cat([condition, real], 1)), True)
            loss_D = 0.5 * (loss_D_fake + loss_D_real)
        self._step("D", loss_D, self._params(self.D))

        # generator and encoder: fool the discriminators, match their features (and the perceptual network's)
        self._requires_grad([self.D], False)
        self.optimizers["G"].zero_grad(set_to_none=True)
        with self.autocast():
            losses = self.generator_losses(condition, fake, real)
            loss_G = sum(losses.values())
        self._step("G", loss_G, self._params(*[n for n in (self.G, self.E) if n is not None]))
        self._requires_grad([self.D], True)
        if frozen:
            self._requires_grad([self.G.global_generator], True)

        named = {**losses, "G": loss_G, "D_real": loss_D_real, "D_fake": loss_D_fake, "D": loss_D}
        values = torch.stack([v.detach().float() for v in named.values()]).tolist()  # one device sync
        return dict(zip(named, values, strict=True))

    def _collect(self, real: torch.Tensor, region: torch.Tensor) -> None:
        """Keep the epoch's first :data:`STYLE_CROPS` real crops (as 8-bit, on the CPU) with their region maps."""
        room = STYLE_CROPS - sum(len(c[0]) for c in self._style_crops)
        if room > 0:
            image = real[:room].detach().float().add(1).mul(127.5).round().clamp(0, 255).to(torch.uint8).cpu()
            self._style_crops.append((image, region[:room].to(torch.uint8).cpu()))

    @torch.no_grad()
    def style_samples(self) -> list[list[torch.Tensor]]:
        """Per region, the mean features of the epoch's crops under the encoder as it is now (the reference encodes
        the training set with the trained encoder; features taken while the encoder was still learning would mix
        the epoch's early and late encoders)."""
        samples: list[list[torch.Tensor]] = [[] for _ in range(N_REGIONS)]
        device = next(self.E.parameters()).device
        was_training = self.E.training
        self.E.eval()  # a batch-norm encoder must neither use these crops' statistics nor update its running ones
        for image, region in self._style_crops:
            real = image.to(device).float().div(127.5).sub(1)
            means, counts = self.E.instance_features(real, region.to(device).long(), N_REGIONS)
            means, present = means.float().cpu(), (counts > 0).cpu()
            for r in range(N_REGIONS):
                if present[:, r].any():
                    samples[r].append(means[present[:, r], r])
        self.E.train(was_training)
        return samples

    def end_epoch(self) -> None:
        """Advance the learning rates; cluster the epoch's crops, encoded by the epoch's final encoder, into the
        style bank."""
        super().end_epoch()
        if self.styles is not None:
            self.styles.fit(self.style_samples())
            self._style_crops = []

    # -- starting from a global run ----------------------------------------------------------------------------------
    def load_initial(self, ckpt: dict[str, Any]) -> list[str]:
        """``--init-from``: a global run (training state or epoch file) into a local enhancer loads its generator into
        the enhancer's global generator, and its discriminators, encoder and styles where their shapes fit; any
        other pairing loads as the base class does."""
        if not self.options.n_local_enhancers:
            return super().load_initial(ckpt)
        if "networks" in ckpt:
            nets = ckpt["networks"]
            parts = {k: nets[k] for k in ("G", "D", "E", "styles") if k in nets}
        elif "translator" in ckpt:
            prefixes = {"generator.": "G", "encoder.": "E", "styles.": "styles"}
            parts = {}
            for key, value in ckpt["translator"].items():
                prefix = next((p for p in prefixes if key.startswith(p)), None)
                if prefix is not None:
                    parts.setdefault(prefixes[prefix], {})[key.removeprefix(prefix)] = value
        else:
            raise StainshiftError("--init-from holds neither networks nor a translator")
        if "G" not in parts:
            raise StainshiftError(f"--init-from holds no generator (got {sorted(parts)})")
        is_global = not any(k.startswith("global_generator.") for k in parts["G"])
        target, label = (self.G.global_generator, "G.global_generator") if is_global else (self.G, "G")
        try:
            target.load_state_dict(parts["G"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0]
            raise StainshiftError(f"--init-from generator does not fit this pix2pixhd's {label} ({first}); the global "
                                  "run needs the same ngf, n_downsample_global, n_blocks_global, norm, mask encoding "
                                  "and use_encoder / feat_num") from None
        loaded = [label]
        for name, net in (("D", self.D), ("E", self.E), ("styles", self.styles)):
            if net is not None and name in parts and _fits(net, parts[name]):
                net.load_state_dict(parts[name])
                loaded.append(name)
        return loaded


def _fits(net: nn.Module, state: dict[str, torch.Tensor]) -> bool:
    own = net.state_dict()
    return set(own) == set(state) and all(tuple(own[k].shape) == tuple(state[k].shape) for k in own)
