"""Label-map-conditioned generator (SPADE family) and a label-conditioned multi-scale discriminator, 2-D or 3-D.

:class:`SPADEGenerator` is a *decoder-only* SPADE generator (Park et al., CVPR 2019) built from MONAI's SPADE
residual block (:class:`monai.networks.nets.spade_network.SPADENetResBlock`, which normalises with MONAI's
:class:`monai.networks.blocks.spade_norm.SPADE`). Why not MONAI's ``SPADENet`` itself: it is a VAE-GAN whose
encoder needs a real image at inference, and its decoder starts from a linear layer sized for one fixed
``input_shape`` and, without the encoder, has no noise input at all. Synthesis from a label map alone needs
(a) any map size and (b) a noise input for diversity, so this generator starts from a *spatial* noise map
``z`` at ``1 / 2**n_levels`` of the map size (fully convolutional: any size works) concatenated with the
downsampled conditioning map, then runs the SPADE residual blocks with x2 upsampling.

Conditioning map (the ``segmap`` passed to every SPADE block), channel by channel:

1. the one-hot label map (``num_labels`` channels, channel ``k`` = the ``k``-th label value in sorted order);
2. if ``num_classes > 0``: a learned class embedding (``class_embed_dim`` values, e.g. contrast / modality)
   broadcast as constant channels;
3. if ``scalar_condition``: one constant channel holding a scalar (e.g. relative slice position in [0, 1]).

Each SPADE block resamples the conditioning map to *its own* grid with nearest interpolation (MONAI's ``SPADE``),
so a block on a grid coarser than the label map reads only every other label pixel per halving. Two layouts:

* ``upsample_first=True`` (Park et al.; what ``medgan train-cgan`` builds by default): each level upsamples, then
  runs its block, so the last block runs on the full label-map grid and every label pixel reaches the output.
* ``upsample_first=False`` (the default of :class:`SPADEGenerator` and of the registry, so that checkpoints
  written before the option existed rebuild unchanged; the shipped ``brain-t1-tissue-2d`` uses it): each block
  runs, then upsamples, so the finest block runs at *half* the label-map resolution and only ``last_conv``
  runs at full resolution. The labels at odd columns (and, for odd sizes, most odd rows) then never reach the
  output, and structures narrower than two pixels may be dropped.

Output: ``out_channels`` channels, linear (no final squashing): the generator works in the *normalised*
intensity units of the training data; :class:`medgan.infer.synthesis.Synthesizer` inverts the stored
normalisation.

:class:`LabelConditionedDiscriminator` wraps MONAI's :class:`~monai.networks.nets.MultiScalePatchDiscriminator`
and feeds it the image concatenated with the one-hot label map (pix2pixHD / SPADE style).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.utils import get_act_layer
from monai.networks.nets import MultiScalePatchDiscriminator
from monai.networks.nets.spade_network import SPADENetResBlock
from torch import nn

__all__ = [
    "SPADEGenerator",
    "LabelConditionedDiscriminator",
    "latent_sizes",
    "UPSAMPLING_MODES",
    "check_class_embedding",
]

#: ``F.interpolate`` modes valid for a 2-D or 3-D feature map (``linear`` is 1-D only, ``bilinear`` / ``bicubic``
#: 2-D only, ``trilinear`` 3-D only); anything else failed only on the first forward, deep inside torch
UPSAMPLING_MODES: dict[int, tuple[str, ...]] = {
    2: ("nearest", "nearest-exact", "bilinear", "bicubic", "area"),
    3: ("nearest", "nearest-exact", "trilinear", "area"),
}


def latent_sizes(spatial_shape: Sequence[int], n_levels: int) -> list[tuple[int, ...]]:
    """Spatial sizes from the latent grid up to ``spatial_shape``, one per level (ceil-halving).

    Hand-written because MONAI's ``SPADEDecoder`` requires every axis to divide by ``2**n_levels``; ceil-halving
    lets the generator take label maps of any size (the last upsampling lands exactly on ``spatial_shape``).

    Examples
    --------
    >>> latent_sizes((32, 30), 2)
    [(8, 8), (16, 15), (32, 30)]
    """
    sizes = [tuple(int(s) for s in spatial_shape)]
    for _ in range(n_levels):
        sizes.append(tuple(max(1, math.ceil(s / 2)) for s in sizes[-1]))
    return sizes[::-1]


def check_class_embedding(num_classes: int, class_embed_dim: int) -> None:
    """Refuse a class condition without an embedding (the one place this rule is written:
    :func:`medgan.models.registry.cgan_generator_config` reports it as a ConfigError).

    Why: ``nn.Embedding(n, 0)`` adds no channel, so every class gave the same image, yet one had to be given.

    Raises
    ------
    ValueError
        ``num_classes > 0`` with ``class_embed_dim < 1``.
    """
    if num_classes > 0 and class_embed_dim < 1:
        raise ValueError(
            f"class_embed_dim must be >= 1 when num_classes > 0 (got {class_embed_dim!r}); "
            "set num_classes 0 to drop the class condition"
        )


class SPADEGenerator(nn.Module):
    """Noise + label map (+ optional class / scalar) -> image, with SPADE normalisation.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    num_labels
        Number of label values (one-hot channels).
    out_channels
        Image channels.
    channels
        Feature channels per level, coarse to fine; ``len(channels)`` x2 upsamplings.
    z_dim
        Channels of the spatial noise map at the coarsest level.
    num_classes
        Number of discrete classes (contrast / modality) for the optional class condition; 0 disables it.
    class_embed_dim
        Size of the class embedding (constant channels of the conditioning map); at least 1 when
        ``num_classes > 0`` (0 would add no channel and silently ignore the class).
    scalar_condition
        Add one constant channel holding a scalar condition (e.g. slice position).
    spade_hidden_channels
        Hidden channels inside each SPADE normalisation block.
    norm
        Parameter-free base normalisation of SPADE (MONAI norm name).
    kernel_size
        Kernel size of the first and last convolutions and of the convolutions inside each SPADE modulation
        (MONAI's ``SPADE``). The two main convolutions of each residual block (``conv_0`` / ``conv_1`` of MONAI's
        ``SPADENetResBlock``) are always 3 wide: MONAI does not pass ``kernel_size`` to them, and changing that
        here would change the weight shapes of existing checkpoints.
    upsampling_mode
        ``F.interpolate`` mode between levels, one of :data:`UPSAMPLING_MODES` for ``spatial_dims``.
    upsample_first
        Upsample *before* each SPADE block (Park et al.), so the last block runs on the full label-map grid and
        every label pixel conditions the output. ``False`` (default, the layout of checkpoints written before this
        option) runs each block before its upsampling: the finest block then runs at half resolution and reads
        every other label pixel only (see the module docstring). Both layouts have the same weight shapes.

    Examples
    --------
    >>> g = SPADEGenerator(2, num_labels=4, channels=(8, 4), z_dim=2, spade_hidden_channels=4)
    >>> seg = torch.zeros(1, 4, 12, 10); seg[:, 0] = 1
    >>> tuple(g(seg).shape)
    (1, 1, 12, 10)
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        num_labels: int = 4,
        out_channels: int = 1,
        channels: Sequence[int] = (128, 64, 32),
        z_dim: int = 16,
        *,
        num_classes: int = 0,
        class_embed_dim: int = 4,
        scalar_condition: bool = False,
        spade_hidden_channels: int = 64,
        norm: str = "INSTANCE",
        kernel_size: int = 3,
        upsampling_mode: str = "nearest",
        upsample_first: bool = False,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims!r}")
        channels = [int(c) for c in channels]
        if not channels or num_labels < 1 or z_dim < 1:
            raise ValueError("need at least one level, one label and z_dim >= 1")
        check_class_embedding(num_classes, class_embed_dim)
        if upsampling_mode not in UPSAMPLING_MODES[spatial_dims]:
            raise ValueError(
                f"upsampling_mode {upsampling_mode!r} does not work on {spatial_dims}-D feature maps; "
                f"choose one of {', '.join(UPSAMPLING_MODES[spatial_dims])}"
            )
        self.spatial_dims = spatial_dims
        self.num_labels = int(num_labels)
        self.out_channels = int(out_channels)
        self.z_dim = int(z_dim)
        self.n_levels = len(channels)
        self.num_classes = int(num_classes)
        self.scalar_condition = bool(scalar_condition)
        self.upsampling_mode = upsampling_mode
        self.upsample_first = bool(upsample_first)
        self.class_embedding = nn.Embedding(self.num_classes, class_embed_dim) if self.num_classes > 0 else None
        self.cond_channels = (
            self.num_labels + (class_embed_dim if self.num_classes > 0 else 0) + int(self.scalar_condition)
        )
        self.conv_init = Convolution(
            spatial_dims, self.cond_channels + self.z_dim, channels[0], kernel_size=kernel_size, conv_only=True
        )
        outs = channels[1:] + channels[-1:]
        self.blocks = nn.ModuleList(
            SPADENetResBlock(
                spatial_dims=spatial_dims,
                in_channels=cin,
                out_channels=cout,
                label_nc=self.cond_channels,
                spade_intermediate_channels=spade_hidden_channels,
                norm=norm,
                kernel_size=kernel_size,
            )
            for cin, cout in zip(channels, outs, strict=True)
        )
        self.last_act = get_act_layer(("leakyrelu", {"negative_slope": 0.2}))
        self.last_conv = Convolution(
            spatial_dims, channels[-1], self.out_channels, kernel_size=kernel_size, conv_only=True
        )

    def noise_shape(self, spatial_shape: Sequence[int]) -> tuple[int, ...]:
        """Shape of one noise map ``z`` (without batch) for a label map of ``spatial_shape``."""
        return (self.z_dim, *latent_sizes(spatial_shape, self.n_levels)[0])

    def condition_map(
        self,
        labels_onehot: torch.Tensor,
        class_index: torch.Tensor | int | None = None,
        scalar: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """The SPADE conditioning map: one-hot labels, then class-embedding and scalar constant channels."""
        b, _, *spatial = labels_onehot.shape
        parts = [labels_onehot.float()]
        ones = [1] * len(spatial)
        if self.class_embedding is not None:
            if class_index is None:
                raise ValueError(f"this generator is conditioned on a class (0..{self.num_classes - 1}); give one")
            idx = torch.as_tensor(class_index, dtype=torch.long, device=labels_onehot.device).reshape(-1)
            emb = self.class_embedding(idx.expand(b) if idx.numel() == 1 else idx)
            parts.append(emb.reshape(b, -1, *ones).expand(b, emb.shape[1], *spatial))
        if self.scalar_condition:
            if scalar is None:
                raise ValueError("this generator is conditioned on a scalar (e.g. slice position); give one")
            val = torch.as_tensor(scalar, dtype=torch.float32, device=labels_onehot.device).reshape(-1)
            val = val.expand(b) if val.numel() == 1 else val
            parts.append(val.reshape(b, 1, *ones).expand(b, 1, *spatial))
        return torch.cat(parts, dim=1)

    def forward(
        self,
        labels_onehot: torch.Tensor,
        z: torch.Tensor | None = None,
        class_index: torch.Tensor | int | None = None,
        scalar: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        """Generate images.

        Parameters
        ----------
        labels_onehot
            ``(B, num_labels, *spatial)`` one-hot label map (see :func:`medgan.data.labels.one_hot`).
        z
            ``(B, *self.noise_shape(spatial))`` noise; drawn with ``torch.randn`` (global RNG) when ``None``.
        class_index
            ``(B,)`` or one int, when the generator has a class condition.
        scalar
            ``(B,)`` or one float, when the generator has a scalar condition.

        Returns
        -------
        torch.Tensor
            ``(B, out_channels, *spatial)`` in normalised intensity units.
        """
        b, _, *spatial = labels_onehot.shape
        sizes = latent_sizes(spatial, self.n_levels)
        if z is None:
            z = torch.randn(b, *self.noise_shape(spatial), device=labels_onehot.device)
        seg = self.condition_map(labels_onehot, class_index, scalar)
        x = torch.cat([F.interpolate(seg, size=sizes[0], mode="nearest"), z.to(seg)], dim=1)
        x = self.conv_init(x)
        # the SPADE blocks resample ``seg`` to x's size (nearest): only a block on the full grid reads every pixel
        for block, size in zip(self.blocks, sizes[1:], strict=True):
            if self.upsample_first:
                x = block(F.interpolate(x, size=size, mode=self.upsampling_mode), seg)
            else:
                x = F.interpolate(block(x, seg), size=size, mode=self.upsampling_mode)
        return self.last_conv(self.last_act(x))


class LabelConditionedDiscriminator(nn.Module):
    """MONAI ``MultiScalePatchDiscriminator`` on ``cat([image, one-hot labels])``.

    Parameters
    ----------
    spatial_dims
        2 or 3.
    in_channels
        Image channels.
    num_labels
        One-hot label channels concatenated with the image.
    num_d
        Number of patch discriminators (discriminator ``i`` has ``num_layers_d * (i + 1)`` stride-2 layers).
    num_layers_d
        Stride-2 layers of the first discriminator.
    channels
        Channels of the first layer.
    norm
        MONAI norm name.
    minimum_size_im
        Smallest image size the discriminator will see (MONAI checks it is deep enough for every scale).

    Returns (forward)
    -----------------
    outputs, features
        ``outputs``: one patch-logit map per discriminator; ``features``: per discriminator, its intermediate
        feature maps (for the feature-matching loss).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        num_labels: int = 4,
        num_d: int = 2,
        num_layers_d: int = 3,
        channels: int = 64,
        *,
        norm: str = "INSTANCE",
        minimum_size_im: int = 256,
    ) -> None:
        super().__init__()
        self.num_labels = int(num_labels)
        self.net = MultiScalePatchDiscriminator(
            num_d=num_d,
            num_layers_d=num_layers_d,
            spatial_dims=spatial_dims,
            channels=channels,
            in_channels=in_channels + self.num_labels,
            out_channels=1,
            norm=norm,
            minimum_size_im=minimum_size_im,
        )

    def forward(
        self, image: torch.Tensor, labels_onehot: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
        return self.net(torch.cat([image, labels_onehot.to(image)], dim=1))
