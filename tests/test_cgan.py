"""The SPADE conditional generator, the label-conditioned discriminator, the cGAN losses, and a tiny real training run."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import medgan
from medgan.data.labels import TISSUE_LABELS, one_hot, tissue_labels
from medgan.data.normalize import fit_normalization
from medgan.errors import ConfigError
from medgan.models.cgan_losses import (
    CRITERIA,
    adversarial_loss_fn,
    discriminator_loss,
    discriminator_step,
    feature_matching_loss,
    generator_loss,
    generator_step,
)
from medgan.models.registry import (
    build_cgan_discriminator,
    build_cgan_generator,
    build_generator,
    generator_config,
)

MNI = Path(__file__).resolve().parents[1] / "sample_data" / "nifti" / "mni_icbm152_2009a_sym"
TINY_G = {"arch": "spade", "channels": [16, 8], "z_dim": 4, "spade_hidden_channels": 8}
TINY_D = {"arch": "multiscale_patch", "channels": 8, "num_d": 2, "num_layers_d": 1, "minimum_size_im": 32}


pytestmark = pytest.mark.usefixtures("torch_one_thread")  # tests/conftest.py: tiny networks, one thread


def _onehot(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    return one_hot(rng.integers(0, 4, size=(1, *shape)), [0, 1, 2, 3])


@pytest.mark.parametrize("spatial_dims,shape", [(2, (32, 32)), (2, (30, 21)), (3, (16, 12, 10))])
def test_generator_shapes_any_size(spatial_dims, shape):
    torch.manual_seed(0)
    g = build_cgan_generator({**TINY_G, "spatial_dims": spatial_dims})
    seg = _onehot(shape).repeat(2, 1, *([1] * spatial_dims))
    z = torch.randn(2, *g.noise_shape(shape))
    y = g(seg, z)
    assert y.shape == (2, 1, *shape)
    assert torch.isfinite(y).all()
    # the noise matters: another z gives another image
    assert not torch.allclose(y, g(seg, torch.randn(2, *g.noise_shape(shape))))


def test_generator_class_and_scalar_conditions():
    torch.manual_seed(0)
    g = build_cgan_generator({**TINY_G, "num_classes": 3, "scalar_condition": True}).eval()
    assert g.cond_channels == 4 + 4 + 1  # one-hot + class embedding + scalar
    seg = _onehot((16, 16))
    z = torch.randn(1, *g.noise_shape((16, 16)))
    a = g(seg, z, class_index=0, scalar=0.2)
    assert not torch.allclose(a, g(seg, z, class_index=2, scalar=0.2))
    assert not torch.allclose(a, g(seg, z, class_index=0, scalar=0.9))
    with pytest.raises(ValueError, match="class"):
        g(seg, z, scalar=0.2)
    with pytest.raises(ValueError, match="scalar"):
        g(seg, z, class_index=1)


def test_discriminator_is_multiscale_and_label_conditioned():
    torch.manual_seed(0)
    d = build_cgan_discriminator(TINY_D)
    img = torch.randn(2, 1, 32, 32)
    seg = _onehot((32, 32)).repeat(2, 1, 1, 1)
    outs, feats = d(img, seg)
    assert len(outs) == len(feats) == 2
    assert [len(f) for f in feats] == [2, 3]  # deeper discriminators see larger patches
    # the label map is an input: another map, another verdict
    outs2, _ = d(img, _onehot((32, 32), seed=1).repeat(2, 1, 1, 1))
    assert not torch.allclose(outs[0], outs2[0])


def test_losses_least_squares_and_hinge():
    real = [torch.ones(2, 1, 4, 4), torch.ones(2, 1, 2, 2)]
    fake = [-torch.ones(2, 1, 4, 4), -torch.ones(2, 1, 2, 2)]
    feats = [[torch.ones(2, 3, 4, 4)], [torch.ones(2, 3, 2, 2)]]
    # a perfect discriminator: LSGAN loss 0 on real (target 1) and fake (target 0 -> (-1)^2 = 1)
    d = discriminator_loss(real, fake)
    assert d["real"].item() == pytest.approx(0.0) and d["fake"].item() == pytest.approx(1.0)
    # MONAI's hinge squashes logits with tanh first: confident logits satisfy both margins
    dh = discriminator_loss([10 * r for r in real], [10 * f for f in fake], criterion="hinge")
    assert dh["loss"].item() == pytest.approx(0.0, abs=1e-6)
    g = generator_loss(fake, feats, feats, feature_weight=10.0)
    assert g["adversarial"].item() == pytest.approx(4.0)  # (-1 - 1)^2
    assert g["feature_matching"].item() == pytest.approx(0.0)
    other = [[2 * torch.ones(2, 3, 4, 4)], [torch.ones(2, 3, 2, 2)]]
    assert feature_matching_loss(feats, other).item() == pytest.approx(0.5)
    with_l1 = generator_loss(fake, feats, feats, fake=torch.zeros(1, 1, 2, 2), real=torch.ones(1, 1, 2, 2), l1_weight=2)
    assert with_l1["loss"].item() == pytest.approx(4.0 + 2.0)
    with pytest.raises(ValueError, match="criterion"):
        discriminator_loss(real, fake, criterion="wasserstein")


@pytest.mark.parametrize("criterion", CRITERIA)
def test_adversarial_loss_is_monais_in_fp32_and_float32_under_bf16_autocast(criterion):
    from monai.losses import PatchAdversarialLoss

    gen = torch.Generator().manual_seed(3)
    logits = [3 * torch.randn(2, 1, 8, 8, generator=gen), 3 * torch.randn(2, 1, 4, 4, generator=gen)]
    monai_fn = PatchAdversarialLoss(reduction="mean", criterion=criterion, no_activation_leastsq=True)
    fn = adversarial_loss_fn(criterion)
    for real, for_d in ((True, True), (False, True), (True, False)):
        # float32 outside autocast: MONAI's values, bit for bit
        assert torch.equal(fn(logits, real, for_d), monai_fn(logits, real, for_d))
        # bf16 logits inside a bf16 autocast block: a float32 loss, the float32 value of those logits, gradients flow
        low = [x.to(torch.bfloat16).requires_grad_() for x in logits]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = fn(low, real, for_d)
        assert loss.dtype == torch.float32
        expected = monai_fn([x.detach().float() for x in low], real, for_d)
        assert loss.item() == pytest.approx(expected.item(), rel=1e-6, abs=1e-7)
        assert loss.item() == pytest.approx(monai_fn(logits, real, for_d).item(), rel=2e-2, abs=1e-3)
        loss.backward()
        for x in low:
            assert x.grad is not None and x.grad.dtype == torch.bfloat16 and bool(torch.isfinite(x.grad).all())
        assert any(bool((x.grad != 0).any()) for x in low)


@contextlib.contextmanager
def _cuda_autocast_kernels():
    """Route CPU tensors' ops through CUDA autocast's kernels, as a bf16 autocast block on a GPU routes CUDA tensors.

    Autocast ``"cuda"`` is switched on and its dispatch key forced into every dispatch. Its casts skip non-CUDA
    tensors (values stay float32), but its refusals apply as on a GPU: ``binary_cross_entropy`` (MONAI's ``"bce"``
    criterion: sigmoid + ``nn.BCELoss``) raises "unsafe to autocast". Private torch API: skips if it is gone.
    """
    guard = getattr(torch._C, "_IncludeDispatchKeyGuard", None)
    key = getattr(getattr(torch._C, "DispatchKey", None), "AutocastCUDA", None)
    if guard is None or key is None:
        pytest.skip("this torch has no _IncludeDispatchKeyGuard / DispatchKey.AutocastCUDA")
    before = torch.is_autocast_enabled("cuda")
    torch.set_autocast_enabled("cuda", True)
    try:
        with guard(key):
            yield
    finally:
        torch.set_autocast_enabled("cuda", before)


def test_bce_cgan_losses_run_inside_cuda_autocast(mni_slices):
    """``loss.criterion: bce`` in train-cgan: the trainer computes the losses inside bf16 autocast on CUDA."""
    image, onehot = mni_slices
    batch = {"image": image[:2], "labels_onehot": onehot[:2]}
    torch.manual_seed(0)
    g, d = build_cgan_generator(TINY_G), build_cgan_discriminator(TINY_D)
    z = torch.randn(2, *g.noise_shape((32, 32)), generator=torch.Generator().manual_seed(1))
    batch["z"] = z
    ref_g, fake = generator_step(g, d, batch, criterion="bce", l1_weight=1.0)
    ref_d = discriminator_step(d, batch, fake, criterion="bce")
    with _cuda_autocast_kernels():
        probs = torch.sigmoid(torch.zeros(2, 1, 4, 4))
        with pytest.raises(RuntimeError, match="unsafe to autocast"):  # the simulation does refuse what a GPU refuses
            F.binary_cross_entropy(probs, torch.ones_like(probs))
        losses_g, fake = generator_step(g, d, batch, criterion="bce", l1_weight=1.0)
        losses_d = discriminator_step(d, batch, fake, criterion="bce")
        real_out, _ = d(batch["image"], batch["labels_onehot"])
        split = discriminator_loss(real_out, real_out, criterion="bce")  # the trainer's call on one-pass outputs
    for key in ("loss", "adversarial", "feature_matching", "l1"):
        assert losses_g[key].item() == pytest.approx(ref_g[key].item(), rel=1e-5)
    for key in ("loss", "real", "fake"):
        assert losses_d[key].item() == pytest.approx(ref_d[key].item(), rel=1e-5)
    assert split["loss"].dtype == torch.float32 and bool(torch.isfinite(split["loss"]))
    losses_g["loss"].backward()
    assert all(p.grad is not None and bool(torch.isfinite(p.grad).all()) for p in g.parameters() if p.requires_grad)


def test_registry_configs_round_trip():
    g = build_cgan_generator({"arch": "spade", "spatial_dims": 3, "channels": [4]})
    assert g.config["factor"] == [1, 1, 1]
    assert generator_config(g.config) == g.config  # a checkpoint stores the completed config
    rebuilt = build_generator(g.config)  # the checkpoint loader's entry point builds cGAN archs too
    assert type(rebuilt) is type(g)
    with pytest.raises(ConfigError, match="unknown keys"):
        build_cgan_generator({"arch": "spade", "bogus": 1})
    with pytest.raises(ConfigError, match="factor must be 1"):
        build_cgan_generator({"arch": "spade", "factor": 2})
    with pytest.raises(ConfigError, match="too small"):
        build_cgan_discriminator({"arch": "multiscale_patch", "num_layers_d": 4, "num_d": 3, "minimum_size_im": 32})


@pytest.fixture(scope="module")
def mni_slices():
    """Six real axial MNI slices (T1 and tissue labels), resized to 32 x 32."""
    gm, wm, t1 = (medgan.load_scan(MNI / f"{n}.nii.gz") for n in ("gm", "wm", "t1"))
    labels = tissue_labels(gm, wm, t1=t1)
    ks = list(range(60, 120, 10))
    t = torch.stack([t1.as_tensor()[0, :, :, k] for k in ks])[:, None]
    lab = torch.stack([labels.as_tensor()[0, :, :, k] for k in ks])[:, None]
    t = F.interpolate(t, size=(32, 32), mode="area")
    lab = F.interpolate(lab, size=(32, 32), mode="nearest")
    norm = fit_normalization(t, method="percentile", lower=0.0, upper=99.5)
    return norm.apply(t), one_hot(lab, sorted(TISSUE_LABELS), batched=True)


def test_tiny_cgan_trains_on_real_mni_slices(mni_slices):
    image, onehot = mni_slices
    torch.manual_seed(0)
    g = build_cgan_generator(TINY_G)
    d = build_cgan_discriminator(TINY_D)
    opt_g = torch.optim.Adam(g.parameters(), 2e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-3, betas=(0.5, 0.999))
    z = torch.randn(len(image), *g.noise_shape((32, 32)), generator=torch.Generator().manual_seed(1))

    def l1_to_real() -> float:
        g.eval()
        with torch.no_grad():
            out = F.l1_loss(g(onehot, z), image).item()
        g.train()
        return out

    start = l1_to_real()
    g_losses, d_losses = [], []
    for _ in range(6):  # the hand loop lives here only; medgan.train hosts the real one
        batch = {"image": image, "labels_onehot": onehot}
        losses, fake = generator_step(g, d, batch, l1_weight=10.0)
        opt_g.zero_grad()
        losses["loss"].backward()
        opt_g.step()
        d_loss = discriminator_step(d, batch, fake)
        opt_d.zero_grad()
        d_loss["loss"].backward()
        opt_d.step()
        g_losses.append(losses["loss"].item())
        d_losses.append(d_loss["loss"].item())
    assert all(np.isfinite(g_losses + d_losses))
    assert g_losses[-1] < g_losses[0]
    assert l1_to_real() < 0.7 * start
