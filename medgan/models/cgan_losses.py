"""Conditional-GAN losses (pix2pixHD / SPADE): adversarial (MONAI ``PatchAdversarialLoss``) + feature matching.

Pure functions over discriminator outputs, so any training loop can call them:

* :func:`generator_loss` — adversarial term on the fake outputs + ``feature_weight`` x feature matching
  (L1 between the discriminator's intermediate features on real and fake, real detached) + optional
  ``l1_weight`` x L1(fake, real);
* :func:`discriminator_loss` — adversarial terms on real (target real) and fake (target fake) outputs.

:func:`generator_step` / :func:`discriminator_step` run the networks on one batch and return the same loss
dicts (no optimiser, no ``backward``): the trainer in :mod:`medgan.train` owns those.

Criteria: ``"least_squares"`` (LSGAN on raw logits) or ``"hinge"``, ``"bce"`` — MONAI's criteria. The adversarial
terms are computed in float32 with autocast off, so they can be called inside the trainer's bf16 autocast block.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.losses import PatchAdversarialLoss
from torch import nn

__all__ = [
    "CRITERIA",
    "adversarial_loss_fn",
    "feature_matching_loss",
    "generator_loss",
    "discriminator_loss",
    "generator_step",
    "discriminator_step",
]

CRITERIA = ("least_squares", "hinge", "bce")

Outputs = torch.Tensor | Sequence[torch.Tensor]
Features = Sequence[Sequence[torch.Tensor]] | Sequence[torch.Tensor]


#: device types whose autocast state :func:`_autocast_off` checks besides the logits' own: autocast is per device
#: type, and the loss (a few reductions, cheap in fp32) turns off every one it finds on
_AUTOCAST_DEVICE_TYPES = frozenset({"cpu", "cuda", "xpu", "mps", "hpu"})


@contextlib.contextmanager
def _autocast_off(device_types: set[str]) -> Iterator[None]:
    """Autocast off for ``device_types`` (the logits') and for every other device type on which it is on."""
    with contextlib.ExitStack() as stack:
        for device_type in sorted(device_types | _AUTOCAST_DEVICE_TYPES):
            if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
                stack.enter_context(torch.autocast(device_type=device_type, enabled=False))
        yield


class _Float32AdversarialLoss(PatchAdversarialLoss):
    """MONAI's ``PatchAdversarialLoss`` on float32 logits with autocast off.

    Hand-written wrapper because MONAI's ``"bce"`` criterion is a sigmoid followed by ``nn.BCELoss``, which CUDA
    autocast refuses ("binary_cross_entropy ... unsafe to autocast"); its ``"hinge"`` criterion would otherwise run
    in bf16. On float32 logits outside autocast the values are MONAI's, bit for bit.
    """

    def forward(
        self, input: torch.Tensor | list, target_is_real: bool, for_discriminator: bool
    ) -> torch.Tensor | list[torch.Tensor]:
        outputs = _as_list(input)
        with _autocast_off({o.device.type for o in outputs}):
            return super().forward([o.float() for o in outputs], target_is_real, for_discriminator)


def adversarial_loss_fn(criterion: str = "least_squares") -> PatchAdversarialLoss:
    """MONAI's patch adversarial loss for ``criterion`` (least squares on raw logits, no sigmoid), computed in float32
    with autocast off (safe inside a bf16 autocast block; the ``"bce"`` criterion is not otherwise)."""
    if criterion not in CRITERIA:
        raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")
    return _Float32AdversarialLoss(reduction="mean", criterion=criterion, no_activation_leastsq=True)


def _as_list(outputs: Outputs) -> list[torch.Tensor]:
    return [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)


def _nested(feats: Features) -> list[list[torch.Tensor]]:
    feats = list(feats)
    if feats and isinstance(feats[0], torch.Tensor):  # one discriminator: a flat list of feature maps
        return [list(feats)]  # type: ignore[list-item]
    return [list(f) for f in feats]  # type: ignore[arg-type]


def feature_matching_loss(disc_feats_real: Features, disc_feats_fake: Features) -> torch.Tensor:
    """Mean over discriminators and layers of L1(fake feature, real feature); real features are detached.

    Parameters
    ----------
    disc_feats_real, disc_feats_fake
        Per discriminator, its intermediate feature maps (``MultiScalePatchDiscriminator``'s second output), or one
        flat list for a single discriminator.
    """
    real, fake = _nested(disc_feats_real), _nested(disc_feats_fake)
    if len(real) != len(fake) or any(len(r) != len(f) for r, f in zip(real, fake, strict=False)):
        raise ValueError("real and fake discriminator features do not have the same structure")
    terms = [F.l1_loss(f, r.detach()) for rs, fs in zip(real, fake, strict=True) for r, f in zip(rs, fs, strict=True)]
    if not terms:
        raise ValueError("no discriminator features given")
    return torch.stack(terms).mean()


def generator_loss(
    disc_outputs_fake: Outputs,
    disc_feats_real: Features,
    disc_feats_fake: Features,
    *,
    criterion: str = "least_squares",
    feature_weight: float = 10.0,
    fake: torch.Tensor | None = None,
    real: torch.Tensor | None = None,
    l1_weight: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Generator loss: adversarial + ``feature_weight`` x feature matching (+ ``l1_weight`` x L1 to the real image).

    Parameters
    ----------
    disc_outputs_fake
        Discriminator logits on generated images (one tensor or one per scale).
    disc_feats_real, disc_feats_fake
        Intermediate discriminator features on real and generated images (see :func:`feature_matching_loss`).
    criterion
        ``"least_squares"``, ``"hinge"`` or ``"bce"``.
    feature_weight
        Weight of the feature-matching term (10 in pix2pixHD / SPADE).
    fake, real
        Generated and real images; needed only when ``l1_weight > 0``.
    l1_weight
        Weight of a pixel L1 term (paired data; 0 disables it).

    Returns
    -------
    dict
        ``"loss"`` (the total, to back-propagate), ``"adversarial"``, ``"feature_matching"``, ``"l1"``.
    """
    adv = adversarial_loss_fn(criterion)(_as_list(disc_outputs_fake), target_is_real=True, for_discriminator=False)
    fm = feature_matching_loss(disc_feats_real, disc_feats_fake)
    total = adv + feature_weight * fm
    l1 = torch.zeros((), device=adv.device)
    if l1_weight > 0:
        if fake is None or real is None:
            raise ValueError("l1_weight > 0 needs fake= and real= images")
        l1 = F.l1_loss(fake, real)
        total = total + l1_weight * l1
    return {"loss": total, "adversarial": adv.detach(), "feature_matching": fm.detach(), "l1": l1.detach()}


def discriminator_loss(
    disc_outputs_real: Outputs, disc_outputs_fake: Outputs, *, criterion: str = "least_squares"
) -> dict[str, torch.Tensor]:
    """Discriminator loss: mean of the adversarial terms on real (target real) and fake (target fake) outputs.

    Parameters
    ----------
    disc_outputs_real, disc_outputs_fake
        Discriminator logits on real and on (detached) generated images.
    criterion
        ``"least_squares"``, ``"hinge"`` or ``"bce"``.

    Returns
    -------
    dict
        ``"loss"`` (to back-propagate), ``"real"``, ``"fake"``.
    """
    fn = adversarial_loss_fn(criterion)
    real = fn(_as_list(disc_outputs_real), target_is_real=True, for_discriminator=True)
    fake = fn(_as_list(disc_outputs_fake), target_is_real=False, for_discriminator=True)
    return {"loss": 0.5 * (real + fake), "real": real.detach(), "fake": fake.detach()}


def _generate(generator: nn.Module, batch: Mapping[str, Any]) -> torch.Tensor:
    return generator(batch["labels_onehot"], batch.get("z"), batch.get("class_index"), batch.get("scalar"))


def generator_step(
    generator: nn.Module,
    discriminator: nn.Module,
    batch: Mapping[str, Any],
    *,
    criterion: str = "least_squares",
    feature_weight: float = 10.0,
    l1_weight: float = 0.0,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Forward pass and generator losses for one batch (the caller runs ``backward`` and the optimiser).

    Parameters
    ----------
    generator
        A :class:`~medgan.models.spade.SPADEGenerator`.
    discriminator
        A :class:`~medgan.models.spade.LabelConditionedDiscriminator` (``(image, onehot) -> (outputs, feats)``).
    batch
        ``"image"`` (normalised real images ``(B, C, *spatial)``), ``"labels_onehot"``, optionally ``"z"``,
        ``"class_index"``, ``"scalar"``.
    criterion
        Adversarial criterion: ``"least_squares"`` (default), ``"hinge"`` or ``"bce"`` (:func:`generator_loss`).
    feature_weight
        Weight of the discriminator feature-matching term (10 in pix2pixHD / SPADE).
    l1_weight
        Weight of a pixel L1 term between the generated and the real image (paired data; 0, the default,
        disables it).

    Returns
    -------
    losses, fake
        The :func:`generator_loss` dict and the generated images (reuse them, detached, for the discriminator step).
    """
    fake = _generate(generator, batch)
    onehot = batch["labels_onehot"]
    out_fake, feats_fake = discriminator(fake, onehot)
    with torch.no_grad():
        _, feats_real = discriminator(batch["image"], onehot)
    losses = generator_loss(
        out_fake,
        feats_real,
        feats_fake,
        criterion=criterion,
        feature_weight=feature_weight,
        fake=fake,
        real=batch["image"],
        l1_weight=l1_weight,
    )
    return losses, fake


def discriminator_step(
    discriminator: nn.Module,
    batch: Mapping[str, Any],
    fake: torch.Tensor,
    *,
    criterion: str = "least_squares",
) -> dict[str, torch.Tensor]:
    """Discriminator losses for one batch given generated images (detached here).

    Parameters
    ----------
    discriminator
        A :class:`~medgan.models.spade.LabelConditionedDiscriminator` (``(image, onehot) -> (outputs, feats)``).
    batch
        ``"image"`` (normalised real images) and ``"labels_onehot"``, as for :func:`generator_step`.
    fake
        The generated images of :func:`generator_step` (detached here, so no gradient reaches the generator).
    criterion
        ``"least_squares"`` (default), ``"hinge"`` or ``"bce"``.

    Returns
    -------
    dict
        The :func:`discriminator_loss` dict: ``"loss"``, ``"real"``, ``"fake"``.
    """
    onehot = batch["labels_onehot"]
    out_real, _ = discriminator(batch["image"], onehot)
    out_fake, _ = discriminator(fake.detach(), onehot)
    return discriminator_loss(out_real, out_fake, criterion=criterion)
