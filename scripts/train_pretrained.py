"""Train the shipped models (``medgan/pretrained/configs/*.yaml``) side by side within a time budget.

This is how the shipped weights are made on a GPU machine; it is a maintainer's tool, not part of
the library. The configs fix everything except the step counts, which depend on the machine:

1. **probe**: every config runs ``probe_steps`` steps at once (the same concurrency as the real
   run, so the measured seconds per step include the contention), with phase steps split like
   the config's;
2. **plan**: each config's steps are scaled to fill ``--budget-minutes`` at its measured rate
   (phase ratios kept; a GAN step is counted as ``GAN_STEP_COST`` content steps), and the final
   config is written to ``OUT/configs/<name>.yaml``: that file, copied over
   ``medgan/pretrained/configs/<name>.yaml``, reproduces the run exactly with
   ``medgan train-sr|train-cgan CONFIG`` (the exact command goes in the model card);
3. **train**: all final configs run concurrently; each run folder (model, content-phase model,
   metrics, summary, logs) is packed into ``OUT/runs.tar.gz``.

A probe that fails with bf16 autocast (``amp: true``) is retried once in fp32 and the final config
says ``amp: false``; every failure is recorded in ``OUT/train_pretrained.json``.

Run (repository root, GPU machine)::

    python scripts/train_pretrained.py --budget-minutes 6.5 --out /tmp/trained

``--steps-scale`` replaces the probe by fixed steps (config steps x scale), e.g. for a CPU smoke test.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "medgan" / "pretrained" / "configs"
#: a GAN step (generator + discriminator) costs about this many content-loss steps
GAN_STEP_COST = 2.0
#: (first phase, second phase) section names per task
PHASES = {"sr": ("phase1", "phase2"), "cgan": ("warmup", "adversarial")}


def _task(cfg: dict) -> str:
    return "cgan" if cfg.get("task") == "cgan" else "sr"


def _resolve_paths(cfg: dict, base: Path) -> dict:
    """Make the config's relative data paths absolute (configs are rewritten to another folder)."""
    cfg = copy.deepcopy(cfg)

    def fix(p: str) -> str:
        # abspath, not resolve(): a symlinked checkout must keep its own relative layout
        return os.path.abspath(base / p) if not os.path.isabs(p) else p

    data = cfg["data"]
    for key in ("train", "val"):
        if key not in data:
            continue
        items = data.get(key) or []
        out = []
        for item in items:
            out.append({k: fix(v) for k, v in item.items()} if isinstance(item, dict) else fix(item))
        data[key] = out
    return cfg


def _relativise(cfg: dict, target_dir: Path) -> dict:
    """Data paths relative to ``medgan/pretrained/configs`` (where the final config will live)."""
    cfg = copy.deepcopy(cfg)

    def rel(p: str) -> str:
        return os.path.relpath(p, target_dir)

    for key in ("train", "val"):
        if key not in cfg["data"]:
            continue
        items = cfg["data"][key] or []
        cfg["data"][key] = [{k: rel(v) for k, v in i.items()} if isinstance(i, dict) else rel(i) for i in items]
    cfg["out_dir"] = os.path.relpath(REPO / "runs" / cfg["name"], target_dir)
    return cfg


def _launch(cfg: dict, path: Path, log: Path) -> subprocess.Popen:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    cmd = [sys.executable, "-m", "pipelines.cli", "train-" + ("cgan" if _task(cfg) == "cgan" else "sr"), str(path)]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    return subprocess.Popen(cmd + ["--no-progress"], stdout=log.open("w"), stderr=subprocess.STDOUT, env=env, cwd=REPO)


def _run_all(jobs: dict[str, tuple[dict, Path]], work: Path) -> dict[str, dict]:
    """Run every (config, out_dir) concurrently; return name -> {rc, summary, seconds, log}."""
    procs = {}
    t0 = time.perf_counter()
    for name, (cfg, _) in jobs.items():
        procs[name] = _launch(cfg, work / f"{name}.yaml", work / f"{name}.log")
    results = {}
    for name, proc in procs.items():
        rc = proc.wait()
        out_dir = Path(jobs[name][0]["out_dir"])
        summary_path = out_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
        tail = (work / f"{name}.log").read_text(errors="replace")[-3000:]
        results[name] = {"rc": rc, "summary": summary, "wall_s": round(time.perf_counter() - t0, 1), "log_tail": tail}
        print(f"[{name}] rc={rc} wall={results[name]['wall_s']} s", flush=True)
        if rc != 0:
            print(tail, flush=True)
    return results


def _with_steps(cfg: dict, first: int, second: int) -> dict:
    cfg = copy.deepcopy(cfg)
    a, b = PHASES[_task(cfg)]
    for phase, new in ((a, int(first)), (b, int(second))):
        old = int(cfg[phase].get("steps", 0))
        cfg[phase]["steps"] = new
        # the warm-up scales with the steps (warmup_steps >= steps is a config error), and stays below them
        warmup = int(cfg[phase].get("warmup_steps", 0) or 0)
        if warmup and old > 0:
            cfg[phase]["warmup_steps"] = min(round(warmup * new / old), max(new - 1, 0))
    return cfg


def _phase_steps(cfg: dict) -> tuple[int, int]:
    a, b = PHASES[_task(cfg)]
    return int(cfg[a]["steps"]), int(cfg.get(b, {}).get("steps", 0))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument("--budget-minutes", type=float, default=6.5, help="training time per model (concurrent)")
    parser.add_argument("--models", default=None, help="comma-separated config names (default: all)")
    parser.add_argument("--probe-steps", type=int, default=60)
    parser.add_argument("--steps-scale", type=float, default=None, help="skip the probe: steps = config x scale")
    parser.add_argument(
        "--num-workers", type=int, default=None, help="DataLoader workers per run (default: each config's)"
    )
    args = parser.parse_args(argv)

    out = args.out.resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    (out / "configs").mkdir(exist_ok=True)
    names = args.models.split(",") if args.models else sorted(p.stem for p in CONFIGS.glob("*.yaml"))
    base = {n: _resolve_paths(yaml.safe_load((CONFIGS / f"{n}.yaml").read_text()), CONFIGS) for n in names}
    if args.num_workers is not None:
        for cfg in base.values():
            cfg["data"]["num_workers"] = args.num_workers
    record: dict = {"budget_minutes": args.budget_minutes, "models": names, "probe": {}, "final": {}}

    rates: dict[str, float] = {}
    if args.steps_scale is None:
        probe_jobs = {}
        for n, cfg in base.items():
            f, s = _phase_steps(cfg)
            n2 = max(1, round(args.probe_steps * s / (f + s))) if s else 0
            pcfg = _with_steps(cfg, args.probe_steps - n2, n2)
            pcfg["out_dir"] = str(work / "probe" / n)
            pcfg["train"]["val_every"] = 0
            pcfg["train"]["checkpoint_every"] = 0
            probe_jobs[n] = (pcfg, Path(pcfg["out_dir"]))
        res = _run_all(probe_jobs, work)
        retry = {}
        for n, r in res.items():
            if r["rc"] != 0 and base[n].get("amp", True):
                print(f"[{n}] probe failed with amp; retrying in fp32", flush=True)
                base[n]["amp"] = False
                pcfg = copy.deepcopy(probe_jobs[n][0])
                pcfg["amp"] = False
                pcfg["out_dir"] = str(work / "probe_fp32" / n)
                retry[n] = (pcfg, Path(pcfg["out_dir"]))
        if retry:
            res.update({f"{n}": v for n, v in _run_all(retry, work).items()})
        record["probe"] = res
        for n, r in res.items():
            if r["rc"] == 0 and r["summary"] and r["summary"].get("seconds_per_step"):
                rates[n] = float(r["summary"]["seconds_per_step"])

    final_jobs = {}
    for n, cfg in base.items():
        f, s = _phase_steps(cfg)
        if args.steps_scale is not None:
            f2, s2 = max(1, round(f * args.steps_scale)), round(s * args.steps_scale)
        elif n in rates:
            # probe seconds/step mixes both phases in the config's ratio; cost units per step
            units = (f + GAN_STEP_COST * s) / (f + s)
            content_step = rates[n] / units
            total_units = args.budget_minutes * 60.0 / content_step
            scale = total_units / (f + GAN_STEP_COST * s)
            f2, s2 = max(1, round(f * scale)), round(s * scale)
        else:
            print(f"[{n}] no rate measured; skipped", flush=True)
            continue
        fcfg = _with_steps(cfg, f2, s2)
        # validation and checkpoints at sensible intervals for the new length
        total = f2 + s2
        fcfg["train"]["val_every"] = max(1, total // 4)
        fcfg["train"]["checkpoint_every"] = max(1, total // 8)
        fcfg["out_dir"] = str(work / "runs" / n)
        final_jobs[n] = (fcfg, Path(fcfg["out_dir"]))
        shipped = _relativise(fcfg, CONFIGS)
        shipped["data"]["num_workers"] = cfg["data"].get("num_workers", "auto")
        header = [ln for ln in (CONFIGS / f"{n}.yaml").read_text().splitlines() if ln.startswith("#")]
        body = yaml.safe_dump(shipped, sort_keys=False, width=120)
        (out / "configs" / f"{n}.yaml").write_text("\n".join(header + [body]))
        print(f"[{n}] final steps {f2} + {s2} (probe s/step {rates.get(n)})", flush=True)

    res = _run_all(final_jobs, work)
    record["final"] = res
    (out / "train_pretrained.json").write_text(json.dumps(record, indent=2, default=str))
    with tarfile.open(out / "runs.tar.gz", "w:gz") as tar:
        for n, (_cfg, run_dir) in final_jobs.items():
            if not run_dir.is_dir():
                continue
            for p in sorted(run_dir.rglob("*")):
                if p.is_file() and "checkpoints" not in p.parts:
                    tar.add(p, arcname=f"{n}/{p.relative_to(run_dir)}")
        tar.add(out / "configs", arcname="configs")
        for log in work.glob("*.log"):
            tar.add(log, arcname=f"logs/{log.name}")
    return 0 if all(r["rc"] == 0 for r in res.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
