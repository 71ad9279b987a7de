"""``train-cgan`` under ``torchrun``: every rank draws its own noise and its own patches, reproducibly.

DDP averages the ranks' gradients; ranks that drew the same noise ``z`` and the same label patches compute the same
gradient, so the extra processes add nothing but cost. Both draws are seeded from ``(seed, step, rank)``
(:meth:`medgan.train.cgan.CGANTrainer.train_step`, :class:`medgan.data.cgan_data.PairSampler`). The test runs two
real gloo ranks on the cropped MNI subject and records what each rank's generator received, with a forward
pre-hook on the real generator (PyTorch's own hook, nothing replaced).

The worker is this file run as a script by ``torchrun`` (``python -m torch.distributed.run``), as the other DDP
tests run ``medgan`` itself under it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import SAMPLE_DATA, cli_env, mni_cgan_subject, write_yaml

MNI = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"

pytestmark = pytest.mark.skipif(
    not all((MNI / f"{n}.nii.gz").is_file() for n in ("t1", "gm", "wm")), reason="sample_data MNI maps missing"
)


def _config(tmp: Path, subject: dict[str, str], seed: int) -> Path:
    """A tiny train-cgan config: two warm-up steps (each one generator forward), no validation or checkpoints."""
    cfg = {
        "task": "cgan",
        "out_dir": str(tmp / "run"),
        "seed": seed,
        "device": "cpu",
        "data": {
            "train": [dict(subject)],
            "val_fraction": 0.2,
            "val_gap": 2,
            "val_max_slices": 1,
            "modality": "MR",
            "num_workers": 0,
        },
        "augment": {"deform_prob": 0.0, "flip_prob": 0.5},
        "model": {"arch": "spade", "channels": [16, 8], "z_dim": 4, "spade_hidden_channels": 8},
        "discriminator": {"channels": 8, "num_d": 2, "num_layers_d": 1, "minimum_size_im": 32},
        "warmup": {"steps": 2, "lr": 2e-3},
        "adversarial": {"steps": 0},
        "train": {"batch_size": 2, "patch_size": 32, "val_every": 0, "checkpoint_every": 0},
    }
    return write_yaml(tmp, cfg, "cgan.yaml")


def _rank_main(config: Path, out: Path) -> None:
    """One torchrun rank: train the config twice in this process group, saving every generator input it saw."""
    import torch.distributed as dist

    from medgan.train import distributed as D
    from medgan.train.cgan import CGANTrainer
    from medgan.train.cgan_config import load_cgan_config

    class Recording(CGANTrainer):
        """The real trainer; its generator's forward pre-hook keeps the (labels, z) of every training forward."""

        seen: list[dict[str, torch.Tensor]]

        def build(self) -> None:
            super().build()
            self.seen = []

            def keep(module: torch.nn.Module, args: tuple) -> None:
                if module.training:  # the EMA copy (made after build) carries the hook too; it only validates
                    self.seen.append({"labels": args[0].detach().clone(), "z": args[1].detach().clone()})

            self.generator.register_forward_pre_hook(keep)

    runs = []
    for i in range(2):  # the same seed twice: a rank's draws must repeat (the first run moved the global RNG)
        cfg = load_cgan_config(config)
        cfg["out_dir"] = str(Path(cfg["out_dir"]).with_name(f"run{i}"))
        trainer = Recording(cfg, progress=False)
        trainer.run()
        runs.append(trainer.seen)
        del trainer
    torch.save({"rank": dist.get_rank(), "runs": runs}, out / f"rank{dist.get_rank()}.pt")
    D.cleanup()


def _torchrun(config: Path, out: Path) -> list[dict]:
    """Run this file under torchrun with 2 gloo processes; each rank's record, in rank order."""
    out.mkdir()
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += [__file__, str(config), str(out)]
    proc = subprocess.run(cmd, cwd=config.parent, env=cli_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-8000:]
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


@pytest.mark.slow
def test_each_ddp_rank_draws_its_own_noise_and_patches_and_repeats_them(tmp_path):
    (tmp_path / "mni").mkdir()
    subject = mni_cgan_subject(tmp_path / "mni")
    ranks = _torchrun(_config(tmp_path, subject, seed=5), tmp_path / "seen")
    assert [r["rank"] for r in ranks] == [0, 1]
    for rec in ranks:
        first, again = rec["runs"]
        assert len(first) == 2  # one generator forward per warm-up step
        for a, b in zip(first, again, strict=True):  # the same seed gives this rank the same draws
            assert torch.equal(a["z"], b["z"]) and torch.equal(a["labels"], b["labels"])
        assert not torch.equal(first[0]["z"], first[1]["z"])  # and a new noise each step
    zero, one = (rec["runs"][0] for rec in ranks)
    for step in range(2):
        assert zero[step]["z"].shape == one[step]["z"].shape
        # the other rank's noise: seeded with the rank, not only (seed, step)
        assert not torch.equal(zero[step]["z"], one[step]["z"]), f"step {step}: both ranks drew the same noise"
        # and its own label patches (PairSampler draws from (seed, step, rank))
        assert not torch.equal(zero[step]["labels"], one[step]["labels"]), f"step {step}: both ranks drew one patch"


if __name__ == "__main__":  # a torchrun rank (see _torchrun)
    torch.set_num_threads(1)
    _rank_main(Path(sys.argv[1]), Path(sys.argv[2]))
