"""Training-step throughput of the reference 3-D SR network (issue #7) and whether data loading keeps the GPU busy.

The network is issue #7's reference: SRResNet (medgan ``srresnet``), 64 channels, 16 residual blocks, x2, in
medgan's phase-1 step (L1 content loss, Adam, bf16 autocast on CUDA, as :class:`medgan.train.trainer.SRTrainer`
does). A batch is four 64^3 low-resolution patches with their 128^3 high-resolution targets.

Cases:

* **synthetic**: batches made once on the device (no data loading): eager, channels-last, ``torch.compile``.
  The first synthetic case is the baseline of the ratio column.
* **real data**: medgan's SR data path: :func:`medgan.data.patches.load_volumes` of the shipped
  ``brain-mr-x2-3d`` config's training scans (real MR in ``sample_data``), its
  :class:`~medgan.data.patches.PatchSampler` (degradation + domain randomisation from that config) behind the
  trainer's ``DataLoader`` (step-indexed dataset, pinned memory), with 0 and N worker processes.

For each: patches/s, the fraction of wall time spent waiting for the next batch, and GPU utilisation
sampled every 20 ms with NVML (``nvidia-ml-py``) when importable. Peak GPU memory is
``torch.cuda.max_memory_allocated``.

Run:  python benchmarks/train_throughput.py --device cuda [--steps 20] [--out-md PATH] [--append]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _speed_common  # noqa: E402
from _speed_common import (  # noqa: E402
    REPO,
    markdown_table,
    reference_config,
    run_case,
    section,
    sync,
    write_md_atomic,
    write_outputs,
)

CONFIG = REPO / "medgan/pretrained/configs/brain-mr-x2-3d.yaml"


class GpuSampler:
    """Mean GPU utilisation (NVML, %) over a ``with`` block, sampled every ``period`` seconds; None without NVML."""

    def __init__(self, device: torch.device, period: float = 0.02) -> None:
        self.period = period
        self.handle = None
        self.samples: list[int] = []
        if device.type != "cuda":
            return
        try:
            import pynvml

            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)
        except Exception:  # noqa: BLE001 -- NVML missing or not permitted: report no utilisation
            self.handle = None

    def _loop(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(Exception):
                self.samples.append(int(self.nvml.nvmlDeviceGetUtilizationRates(self.handle).gpu))
            time.sleep(self.period)

    def __enter__(self) -> GpuSampler:
        self.samples = []
        if self.handle is not None:
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._loop, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.handle is not None:
            self._stop.set()
            self._thread.join()

    @property
    def mean(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None


def build_step(device: torch.device, channels_last: bool, compile_net: bool, fused: bool = False):
    """The reference generator, its optimiser and a phase-1 training step ``step(lr, hr) -> loss``.

    ``fused``: torch's fused Adam kernel (one launch for all parameters) instead of the default ``foreach``."""
    from medgan.models.registry import build_generator

    torch.manual_seed(0)
    gen = build_generator(reference_config(3)).to(device)
    fmt = torch.channels_last_3d if channels_last else torch.contiguous_format
    gen = gen.to(memory_format=fmt)
    opt = torch.optim.Adam(gen.parameters(), lr=1e-4, betas=(0.9, 0.99), fused=fused or None)
    net = torch.compile(gen) if compile_net else gen
    amp = device.type == "cuda"

    def step(lr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
        lr = lr.to(device, non_blocking=True).contiguous(memory_format=fmt)
        hr = hr.to(device, non_blocking=True)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            sr = net(lr)
        loss = F.l1_loss(sr.float(), hr)
        loss.backward()
        opt.step()
        return loss.detach()

    return step


def synthetic_case(device: torch.device, batch: int, lr_edge: int, steps: int, cl: bool, comp: bool, fused=False):
    def fn() -> dict[str, Any]:
        step = build_step(device, cl, comp, fused)
        lr = torch.rand(batch, 1, lr_edge, lr_edge, lr_edge, device=device)
        hr = torch.rand(batch, 1, 2 * lr_edge, 2 * lr_edge, 2 * lr_edge, device=device)
        t0 = time.perf_counter()
        for _ in range(3):
            step(lr, hr)
        sync(device)
        first = time.perf_counter() - t0
        with GpuSampler(device) as gpu:
            t0 = time.perf_counter()
            for _ in range(steps):
                step(lr, hr)
            sync(device)
            sec = time.perf_counter() - t0
        return {"steps": steps, "seconds": sec, "wait_frac": 0.0, "gpu_util": gpu.mean, "warmup_s": first}

    return fn


def reference_sampler(volumes: list[dict], cfg: dict, lr_edge: int, batch: int):
    """Issue #7's reference training batch drawn from ``volumes``: ``batch`` HR patches of ``(2 * lr_edge)^3`` at
    x2, with ``cfg``'s (the shipped brain-mr-x2-3d config's) degradation and augmentation (also
    ``benchmarks/data_pipeline.py``'s)."""
    from medgan.data.domain_randomization import Augmenter
    from medgan.data.patches import PatchSampler

    data = cfg["data"]
    return PatchSampler(
        volumes,
        patch_size=[2 * lr_edge] * 3,
        factor=[2, 2, 2],
        batch_size=batch,
        degradation=cfg["degradation"],
        augmenter=Augmenter(cfg["augment"]) if cfg["augment"]["enabled"] else None,
        foreground_ratio=data["foreground_ratio"],
        slice_axes=data["slice_axes"],
        in_channels=1,
        seed=0,
    )


def real_case(
    device: torch.device, batch: int, lr_edge: int, steps: int, workers: int, cl: bool, comp: bool, fused=False
):
    def fn() -> dict[str, Any]:
        from medgan.data.patches import MARGIN_LR, StepDataset, load_volumes
        from medgan.train.config import load_config

        cfg = load_config(CONFIG)
        data = cfg["data"]
        t_load = time.perf_counter()
        volumes = load_volumes(data["train"], data["normalization"])
        load_s = time.perf_counter() - t_load
        # the reference batch needs 128^3 HR patches plus the sampler's context: keep the scans large enough
        need = 2 * lr_edge + 2 * MARGIN_LR * 2
        volumes = [v for v in volumes if min(v["image"].shape[1:]) >= need]
        if not volumes:
            raise RuntimeError(f"no training scan of {CONFIG.name} is at least {need} voxels along every axis")
        sampler = reference_sampler(volumes, cfg, lr_edge, batch)
        warm = 3
        loader = torch.utils.data.DataLoader(
            StepDataset(sampler, warm + steps),
            batch_size=None,
            sampler=range(warm + steps),
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
            prefetch_factor=4 if workers else None,
        )
        step = build_step(device, cl, comp, fused)
        it = iter(loader)
        t0 = time.perf_counter()
        for _ in range(warm):
            step(*next(it))
        sync(device)
        first = time.perf_counter() - t0
        wait = 0.0
        with GpuSampler(device) as gpu:
            t0 = time.perf_counter()
            for _ in range(steps):
                tw = time.perf_counter()
                lr, hr = next(it)
                wait += time.perf_counter() - tw
                step(lr, hr)
            sync(device)
            sec = time.perf_counter() - t0
        del it, loader
        return {
            "steps": steps,
            "seconds": sec,
            "wait_frac": wait / sec,
            "gpu_util": gpu.mean,
            "warmup_s": first,
            "volumes_load_s": load_s,
            "scans": len(volumes),
        }

    return fn


def trainer_case(device: torch.device, batch: int, lr_edge: int, steps: int, workers: int, **options: Any):
    """medgan's own trainer (``train_sr``, the loop ``medgan train-sr`` runs) on the reference network.

    The ``brain-mr-x2-3d`` config with the reference generator, ``batch`` patches of ``2 * lr_edge`` HR voxels
    from the MNI T1, phase 1 only, no validation, one state saved at the end; ``options`` go to its ``train``
    section (``channels_last``, ``fused_optimizer``, ``compile``; unset ones keep their defaults). The speed is the
    trainer's own measurement (``TrainResult.speed``: the steps after the first two, validation and checkpoints
    left out), so this row times exactly what users run: EMA update, LR schedule and logging included.
    """

    def fn() -> dict[str, Any]:
        import tempfile

        from medgan.train.config import load_config
        from medgan.train.trainer import train_sr

        cfg = load_config(CONFIG)
        warm = 2  # TrainResult.speed leaves out the first 2 steps
        with tempfile.TemporaryDirectory(prefix="medgan-train-bench-") as out:
            cfg.update(out_dir=out, device=str(device), name="reference-srresnet-3d-x2")
            cfg["model"] = reference_config(3)
            cfg["data"].update(train=[str(REPO / "sample_data/nifti/mni_icbm152_2009a_sym/t1.nii.gz")], val=[])
            cfg["data"]["num_workers"] = workers
            cfg["phase1"].update(steps=warm + steps, warmup_steps=0)
            cfg["phase2"]["steps"] = 0
            cfg["train"].update(
                batch_size=batch, patch_size=2 * lr_edge, val_every=0, checkpoint_every=0, log_every=10**6, **options
            )
            with GpuSampler(device) as gpu:
                t0 = time.perf_counter()
                result = train_sr(cfg, progress=False)
                wall = time.perf_counter() - t0
        speed = result.speed
        return {
            "steps": speed["timed_steps"],
            "seconds": speed["seconds_per_step"] * speed["timed_steps"],
            "wait_frac": speed["data_wait_fraction"],
            "gpu_util": gpu.mean,
            "warmup_s": speed["first_step_seconds"],
            "call_s": wall,
        }

    return fn


COLUMNS = [
    ("case", "case"),
    ("data", "data"),
    ("batch", "batch (LR -> HR)"),
    ("patches_s", "patches/s"),
    ("ratio", "x vs first row"),
    ("wait_frac", "time waiting for data"),
    ("gpu_util", "GPU util % (NVML; train_sr rows: the whole call, start-up included)"),
    ("gpu_peak_mb", "GPU peak MB"),
    ("warmup_s", "warm-up s (3 steps; train_sr rows: the first step)"),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per case")
    parser.add_argument("--batch", type=int, default=4, help="patches per batch")
    parser.add_argument("--lr-edge", type=int, default=64, help="low-resolution patch edge (HR is twice)")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers of the parallel case")
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--only-trainer", action="store_true", help="only the train_sr rows (medgan's own trainer)")
    parser.add_argument("--budget-s", type=float, default=0, help="skip cases starting after this many seconds")
    parser.add_argument("--out-md", default=None)
    parser.add_argument("--append", action="store_true")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    workers = args.workers if args.workers is not None else max(1, min(12, cpus - 2))
    batch_text = f"{args.batch} x {args.lr_edge}^3 -> {2 * args.lr_edge}^3"
    if args.budget_s:
        _speed_common.DEADLINE = time.perf_counter() + args.budget_s
    rows: list[dict] = []
    t_all = time.perf_counter()
    real_steps = max(4, args.steps // 2)
    data_n = f"real, {workers} workers"

    def trainer(label: str, **options: Any) -> tuple[str, str, Any]:
        return label, data_n, trainer_case(device, args.batch, args.lr_edge, args.steps, workers, **options)

    # medgan's own trainer (train_sr) first: without the speed options (the ratio baseline), with its defaults
    # (channels-last + fused Adam), compiled; the bare benchmark step after; one option at a time last
    cases = [
        trainer("train_sr, channels-last + fused Adam off", channels_last=False, fused_optimizer=False),
        trainer("train_sr, defaults (channels-last + fused Adam)"),
    ]
    if not args.no_compile:
        cases.append(trainer("train_sr, defaults + compile", compile=True))
    cases += [
        (
            "eager bf16",
            "synthetic (on device)",
            synthetic_case(device, args.batch, args.lr_edge, args.steps, False, False),
        ),
        (
            "bf16 + channels-last",
            "synthetic (on device)",
            synthetic_case(device, args.batch, args.lr_edge, args.steps, True, False),
        ),
    ]
    if not args.no_compile:
        cases.append(
            (
                "bf16 + channels-last + compile",
                "synthetic (on device)",
                synthetic_case(device, args.batch, args.lr_edge, args.steps, True, True),
            )
        )
    cases += [
        (
            "bf16 + channels-last",
            "real, 0 workers",
            real_case(device, args.batch, args.lr_edge, real_steps, 0, True, False),
        ),
        ("bf16 + channels-last", data_n, real_case(device, args.batch, args.lr_edge, args.steps, workers, True, False)),
        (
            "bf16 + channels-last + fused Adam",
            data_n,
            real_case(device, args.batch, args.lr_edge, args.steps, workers, True, False, True),
        ),
    ]
    if not args.no_compile:
        cases.append(
            (
                "bf16 + channels-last + compile + fused Adam",
                data_n,
                real_case(device, args.batch, args.lr_edge, args.steps, workers, True, True, True),
            )
        )
    cases += [
        trainer("train_sr, channels-last only", fused_optimizer=False),
        trainer("train_sr, fused Adam only", channels_last=False),
    ]
    if args.only_trainer:
        cases = [c for c in cases if c[0].startswith("train_sr")]

    command = "python benchmarks/train_throughput.py " + " ".join(argv if argv is not None else sys.argv[1:])

    def measure() -> None:
        base = None
        for name, data, fn in cases:
            row = run_case(rows, {"case": name, "data": data, "batch": batch_text}, fn)
            if "seconds" in row:
                row["patches_s"] = row["steps"] * args.batch / row["seconds"]
                base = base or row["patches_s"]
                row["ratio"] = row["patches_s"] / base
                row["wait_frac"] = f"{100 * row['wait_frac']:.0f} %"
            # after every finished case: a run killed at a device call's limit (SIGKILL, no chance to write at the
            # end) still leaves the table of the cases it finished in --out-md
            if args.out_md:
                write_md_atomic(args.out_md, document("", partial=True))
            if not args.no_compile:
                torch._dynamo.reset()

    def document(interrupted: str, partial: bool) -> str:
        """The markdown section of the rows measured so far."""
        body = markdown_table(rows, COLUMNS)
        best = [r for r in rows if r.get("patches_s") and r["data"].startswith("real")]
        if best and device.type == "cuda":
            b = max(best, key=lambda r: r["patches_s"])
            util = b.get("gpu_util")
            wait = float(str(b["wait_frac"]).rstrip(" %")) / 100
            if b["case"].startswith("train_sr"):  # NVML spans the whole call there: busy = hardly waiting for data
                busy, how = wait <= 0.10, f"waiting for data {100 * wait:.0f} % of the timed steps"
            else:
                busy, how = util is not None and util >= 90, f"GPU {'n/a' if util is None else f'{util:.0f} %'} busy"
            met = b["patches_s"] >= 35 and busy
            body += (
                f"\n\n- goal (>= 35 3-D patches/s with the GPU >= 90 % busy, real data): {b['case']}, {b['data']}: "
                f"{b['patches_s']:.1f} patches/s, {how}: {'met' if met else 'MISSED'}"
            )
        if not partial:
            print(body)
        notes = [
            "network: SRResNet 64 channels, 16 residual blocks, x2 (random init); step = phase-1 L1 + Adam, bf16 autocast on CUDA",
            f"real data: {CONFIG.relative_to(REPO)} training scans at least {2 * args.lr_edge + 8} voxels along every axis "
            "(smaller ones cannot hold a reference patch plus its context), its degradation and augmentation; "
            f"{args.steps} timed steps per case ({real_steps} with 0 workers) after 3 untimed",
            "train_sr rows: medgan's trainer (train_sr) on the same scan and network, phase 1, no validation; its own "
            "timing (TrainResult.speed) of the steps after the first 2, EMA update and LR schedule included",
            "cuDNN autotuning (torch.backends.cudnn.benchmark) is on in every case, train_sr rows included; medgan's "
            "trainer itself leaves it at PyTorch's default (off)"
            if device.type == "cuda"
            else "",
            f"total benchmark wall time {time.perf_counter() - t_all:.0f} s",
            interrupted,
            f"**partial table** ({len(rows)} cases so far): rewritten after every case, complete only when the run ends "
            "(this line is then gone)"
            if partial
            else "",
        ]
        return section(f"SR training throughput, {device.type}", device, command, notes, body)

    _speed_common.stop_on_sigterm()
    interrupted = _speed_common.measure_until_stopped(measure)
    text = document(interrupted, partial=False)
    if args.out_md:
        write_md_atomic(args.out_md, text)
        print(f"markdown section written to {args.out_md}", file=sys.stderr)
    write_outputs(text, out_md=None, append=args.append)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
