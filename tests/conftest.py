"""Shared test helpers: where the real data live, and skips that CI turns into failures.

CI sets ``MEDGAN_REQUIRE_SHARED=1`` and ``MEDGAN_REQUIRE_TOOLS=1`` so a missing corpus or
tool fails loudly there; in a user's clone without ``../shared`` or the Debian tools the
tests that need them are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO / "sample_data"
SHARED = REPO.parent / "shared"
CORPUS = SHARED / "corpora" / "dicom"

#: ``MEDGAN_TEST_NO_NATIVE_BF16=1`` runs the suite as on a CPU without native bf16 (most laptops), where the
#: SuperResolver's "auto" precision is fp32, not bf16 (CONTRIBUTING.md): torch says no AVX512-BF16 / AMX here and,
#: through ``tests/_no_native_bf16/sitecustomize.py`` on ``PYTHONPATH``, in every Python process the tests start.
NO_NATIVE_BF16 = os.environ.get("MEDGAN_TEST_NO_NATIVE_BF16") == "1"
NO_NATIVE_BF16_PATH = [str(Path(__file__).resolve().parent / "_no_native_bf16")] if NO_NATIVE_BF16 else []
if NO_NATIVE_BF16:
    import torch

    torch.cpu._is_avx512_bf16_supported = torch.cpu._is_amx_tile_supported = lambda: False
    os.environ["PYTHONPATH"] = os.pathsep.join([*NO_NATIVE_BF16_PATH, *filter(None, [os.environ.get("PYTHONPATH")])])


def require_shared() -> Path:
    """Return the DICOM corpus folder, or skip (fail in CI) when ``../shared`` is absent."""
    if not (CORPUS / "manifest.json").is_file():
        msg = f"conformance corpus not found at {CORPUS} (../shared is absent in this clone)"
        if os.environ.get("MEDGAN_REQUIRE_SHARED"):
            pytest.fail(msg)
        pytest.skip(msg)
    return CORPUS


def require_tool(name: str) -> str:
    """Return the path of an external program, or skip (fail in CI) when it is not installed."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not installed (apt-get install the Debian package; .ci/run does)"
        if os.environ.get("MEDGAN_REQUIRE_TOOLS"):
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    return require_shared()


#: The MNI ICBM152 2009a T1 shipped in the repo: nilearn's template cropped to 155x192x161 (uint8), starting at
#: voxel (21, 22, 0) of nilearn's 197x233x189 grid, world geometry kept (see sample_data/README.md).
MNI_T1 = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz"
#: Where the sample_data crop starts on nilearn's original grid: original index = sample index + this.
MNI_CROP_OFFSET = (21, 22, 0)


def mni_t1_path() -> Path:
    """The real MNI T1 template shipped in ``sample_data/`` (no nilearn needed); fails if it is missing."""
    if not MNI_T1.is_file():
        pytest.fail(f"{MNI_T1} is missing: sample_data/ ships with the repository (rebuild: sample_data/README.md)")
    return MNI_T1


def mni_t1_and_tissue_labels():
    """The real MNI T1 template and its tissue label map (:func:`medgan.data.labels.tissue_labels` of the shipped
    GM/WM maps, with the T1), as loaded ``MetaTensor`` s: the real image/label pair of the synthesis tests."""
    import medgan
    from medgan.data.labels import tissue_labels

    folder = mni_t1_path().parent
    t1 = medgan.load_scan(folder / "t1.nii.gz")
    labels = tissue_labels(medgan.load_scan(folder / "gm.nii.gz"), medgan.load_scan(folder / "wm.nii.gz"), t1=t1)
    return t1, labels


@pytest.fixture(scope="session")
def mni_t1() -> Path:
    """Path of the real MNI T1 template in ``sample_data/`` (see :func:`mni_t1_path`)."""
    return mni_t1_path()


def permissions_apply(probe: Path) -> list[str]:
    """Command prefix under which file permissions apply to this test's processes: none for a normal user; for root,
    util-linux's setpriv dropping the capabilities that bypass them. Skips when ``probe`` (a chmod 000 file or
    folder) stays readable."""
    prefix: list[str] = []
    if os.geteuid() == 0:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: file permissions cannot be made to apply")
        caps = "-dac_override,-dac_read_search"
        prefix = [setpriv, "--bounding-set", caps, "--inh-caps", caps, "--"]
    read = "ls" if probe.is_dir() else "cat"
    if subprocess.run([*prefix, read, str(probe)], capture_output=True).returncode == 0:
        pytest.skip("file permissions do not apply here (capabilities cannot be dropped)")
    return prefix


# ------------------------------------------------------------------ training tests (train-sr, train-cgan)
@pytest.fixture
def fresh_warnings():
    """:func:`medgan.io.scan.warn_once`'s said-once set emptied for the test and restored after it, so a test of a
    once-per-process warning does not depend on which tests ran before it in the same process."""
    from medgan.io import scan as scan_module

    saved = set(scan_module._WARNED)
    scan_module._WARNED.clear()
    yield
    scan_module._WARNED.clear()
    scan_module._WARNED.update(saved)


@pytest.fixture(scope="module")
def torch_one_thread():
    """Run a test module's tiny convolutions on one torch thread (faster and steadier on a busy 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def write_yaml(folder: Path, data: dict, name: str = "run.yaml") -> Path:
    """Write ``data`` as ``folder/name`` (the folder is created); returns the path."""
    import yaml

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    return path


def merge_sections(cfg: dict, sections: dict) -> dict:
    """``cfg`` with ``sections`` merged in: a mapping updates that section, except ``model`` / ``discriminator`` and
    any other value, which replace it whole."""
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict) and key not in ("model", "discriminator"):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


def cli_env() -> dict[str, str]:
    """Environment for running ``python -m pipelines.cli`` in a subprocess from this checkout (one OpenMP thread).

    ``PYTHONFAULTHANDLER`` makes a process that dies on a signal (a native abort in a torchrun rank, say) print
    every thread's Python stack to stderr, which the failing assertion shows.
    """
    path = os.pathsep.join([str(REPO), *NO_NATIVE_BF16_PATH])
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, "PYTHONFAULTHANDLER": "1"}


def state_params(out_dir: Path, step: int) -> dict:
    """Generator (``g.``), EMA (``ema.``) and discriminator (``d.``) tensors of a run's training state at ``step``."""
    import torch

    st = torch.load(out_dir / "checkpoints" / f"state_{step:08d}.pt", weights_only=True)
    out = {f"g.{k}": v for k, v in st["generator"].items()}
    out.update({f"ema.{k}": v for k, v in st["ema"].items()})
    out.update({f"d.{k}": v for k, v in st["discriminator"].items()})
    return out


def assert_same_params(a: dict, b: dict) -> None:
    """The two :func:`state_params` results hold the same tensors (to 1e-6)."""
    import torch

    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6, msg=key)


def run_two_process_training(
    command: str, config: Path, out_dir: Path, *, checkpoint_step: int, val_steps: list[int]
) -> dict:
    """Run ``medgan COMMAND CONFIG`` under ``torchrun`` with 2 gloo processes (in the config's folder).

    Checks what rank 0 wrote to ``out_dir``: ``summary.json`` (world size 2, finished, identical generators on both
    ranks), the state at ``checkpoint_step`` (both ranks' RNG), one ``metrics.jsonl`` row per step in
    ``val_steps`` and the exported model. Returns the summary.
    """
    import json
    import subprocess
    import sys

    import torch

    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    cmd += ["-m", "pipelines.cli", command, str(config), "--no-progress"]
    proc = subprocess.run(cmd, cwd=config.parent, env=cli_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-8000:]
    out = Path(out_dir)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["world_size"] == 2 and summary["finished"] and summary["ranks_identical"]
    st = torch.load(out / "checkpoints" / f"state_{checkpoint_step:08d}.pt", weights_only=True)
    assert len(st["rng"]) == 2 and st["world_size"] == 2  # every rank's RNG state
    # only rank 0 wrote: one metrics row per validation
    assert [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()] == val_steps
    assert (out / "model.safetensors").is_file()
    return summary


# ---------------------------------------------------------------- tiny models and label maps for the batch tests
def save_tiny_sr(path: Path, *, factor: tuple[int, ...] = (2, 2, 1), roi_size: int = 32) -> Path:
    """An untrained tiny 3-D SRResNet (default x2 in-plane, ``(2, 2, 1)``) saved with the real checkpoint API."""
    import torch

    from medgan.infer.checkpoint import save_checkpoint
    from medgan.models.registry import build_generator

    torch.manual_seed(0)
    cfg = {"arch": "srresnet", "spatial_dims": 3, "channels": 4, "n_blocks": 1, "factor": list(factor)}
    return save_checkpoint(path, build_generator(cfg), roi_size=roi_size)


def save_slow_sr(path: Path) -> Path:
    """An untrained 3-D SRResNet (x2 in-plane, 32 features, 4 blocks) saved with the real checkpoint API: big enough
    that a scan takes a good part of a second on one thread, so a run is still going when a test signals it after
    the first row (with the tiny model the last of 8 scans finished 60-150 ms after the first, and a test held off
    the CPU that long signalled a finished run)."""
    import torch

    from medgan.infer.checkpoint import save_checkpoint
    from medgan.models.registry import build_generator

    torch.manual_seed(0)
    cfg = {"arch": "srresnet", "spatial_dims": 3, "channels": 32, "n_blocks": 4, "factor": [2, 2, 1]}
    return save_checkpoint(path, build_generator(cfg), roi_size=32)


def save_tiny_synthesizer(path: Path, classes: list[str] | None = None) -> Path:
    """An untrained tiny 2-D SPADE generator (labels 0 background, 1 GM, 2 WM) saved with the real API; with
    ``classes``, conditioned on that many classes of those names."""
    import torch

    from medgan.data.normalize import Normalization
    from medgan.infer.synthesis import save_synthesizer
    from medgan.models.registry import build_generator

    torch.manual_seed(0)
    gen = build_generator(
        {
            "arch": "spade",
            "spatial_dims": 2,
            "num_labels": 3,
            "channels": [8, 4],
            "z_dim": 4,
            "spade_hidden_channels": 4,
            **({"num_classes": len(classes)} if classes else {}),
        }
    )
    norm = Normalization(
        method="percentile", offset=0.0, scale=100.0, lower=0.5, upper=99.5, data_min=0.0, data_max=100.0
    )
    labels = {0: "background", 1: "gm", 2: "wm"}
    if classes:
        return save_synthesizer(path, gen, labels=labels, normalization=norm, classes=classes)
    return save_synthesizer(path, gen, labels=labels, normalization=norm)


def mni_tissue_slice(dst: Path, z: int) -> Path:
    """A real 2-D tissue label map in the values of the shipped ``brain-t1-tissue-2d`` (0 background, 2 grey and
    3 white matter): the argmax of background / MNI GM / MNI WM probabilities on axial slice ``z``."""
    import nibabel as nib
    import numpy as np

    mni = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
    box = (slice(50, 114), slice(60, 124), slice(z, z + 1))
    gm, wm = (nib.load(mni / f"{t}.nii.gz").slicer[box] for t in ("gm", "wm"))
    g, w = np.asarray(gm.dataobj, dtype=np.float32)[..., 0], np.asarray(wm.dataobj, dtype=np.float32)[..., 0]
    labels = np.array([0, 2, 3], dtype=np.uint8)[np.argmax(np.stack([np.full_like(g, 64), g, w]), axis=0)]
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels, gm.affine), dst)
    return dst


def dciodvfy_errors(folder: Path) -> list[str]:
    """dciodvfy's error lines for every ``*.dcm`` file of ``folder`` (skips, or fails in CI, without dciodvfy)."""
    import subprocess

    require_tool("dciodvfy")
    errors = []
    for f in sorted(folder.glob("*.dcm")):
        proc = subprocess.run(["dciodvfy", str(f)], capture_output=True, text=True, timeout=60)
        errors += [f"{f.name}: {line}" for line in (proc.stdout + proc.stderr).splitlines() if "Error" in line]
    return errors


def tiny_sr_config(folder: Path, **data) -> Path:
    """``folder/sr.yaml``: a tiny train-sr config on the MNI T1, with ``data`` entries added to its data section."""
    mni = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
    cfg = {
        "out_dir": str(folder / "run"),
        "data": {"train": [str(mni / "t1.nii.gz")], **data},
        "model": {"arch": "srresnet", "spatial_dims": 3, "channels": 8, "n_blocks": 2},
        "phase1": {"steps": 2},
        "train": {"batch_size": 1, "patch_size": 16},
    }
    return write_yaml(folder, cfg, "sr.yaml")


def crop_scan(scan, *box: slice):
    """``scan`` cropped to ``box`` (one slice per spatial axis) with its affine moved to the crop's first voxel.

    Indexing a MONAI ``MetaTensor`` (``scan[:, 40:112, ...]``) keeps the uncropped affine, so a crop saved that way
    lies at the wrong place in the scanner (its origin is the full scan's); MONAI's ``SpatialCrop`` updates it.
    """
    from monai.transforms import SpatialCrop

    return SpatialCrop(roi_slices=list(box))(scan)


def mni_cgan_subject(out: Path) -> dict[str, str]:
    """A train-cgan subject ``{"image", "gm", "wm"}``: the real MNI T1 / GM / WM maps cropped to a 64 x 72 x 40
    block around the brain centre (quick to load), saved as NIfTI in ``out``."""
    from medgan import load_scan, save_scan

    paths = {}
    for key, name in (("image", "t1"), ("gm", "gm"), ("wm", "wm")):
        scan = load_scan(SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym" / f"{name}.nii.gz")
        x, y, z = (n // 2 for n in scan.shape[1:])
        paths[key] = str(
            save_scan(
                crop_scan(scan, slice(x - 32, x + 32), slice(y - 36, y + 36), slice(z - 20, z + 20)),
                out / f"{name}.nii.gz",
            )
        )
    return paths


def tiny_cgan_config(folder: Path, **data) -> Path:
    """``folder/cgan.yaml``: a tiny train-cgan config on the MNI subject, with ``data`` entries added."""
    mni = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
    subject = {"image": str(mni / "t1.nii.gz"), "gm": str(mni / "gm.nii.gz"), "wm": str(mni / "wm.nii.gz")}
    cfg = {
        "task": "cgan",
        "out_dir": str(folder / "run"),
        "data": {"train": [subject], **data},
        "model": {"arch": "spade", "channels": [16, 8], "z_dim": 4, "spade_hidden_channels": 8},
        "discriminator": {"channels": 8, "num_d": 2, "num_layers_d": 1, "minimum_size_im": 32},
        "adversarial": {"steps": 2},
        "train": {"batch_size": 1, "patch_size": 32},
    }
    return write_yaml(folder, cfg, "cgan.yaml")


def mni_label_map(dst: Path, box: tuple[slice, ...], *, extra_value: int | None = None) -> Path:
    """A real label map: argmax of background / MNI GM / MNI WM probabilities on a crop of the template grid
    (``extra_value``: written into voxel 0, a value the tiny synthesizer does not know)."""
    import nibabel as nib
    import numpy as np

    mni = SAMPLE_DATA / "nifti" / "mni_icbm152_2009a_sym"
    gm, wm = (nib.load(mni / f"{t}.nii.gz").slicer[box] for t in ("gm", "wm"))
    g, w = np.asarray(gm.dataobj, dtype=np.float32), np.asarray(wm.dataobj, dtype=np.float32)
    labels = np.argmax(np.stack([np.full_like(g, 64), g, w]), axis=0).astype(np.uint8)
    if extra_value is not None:
        labels[0, 0, 0] = extra_value
    dst.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels, gm.affine), dst)
    return dst


# ---------------------------------------------------------------- processes of a run (Linux /proc)
def proc_descendants(pid: int) -> set[int]:
    """Every live process below ``pid`` (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def proc_alive(pid: int) -> bool:
    """Whether process ``pid`` is running (not gone, not a zombie; Linux /proc)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def scipy_hfen_log(x: Any, sigma: float) -> Any:
    """HFEN's zero-sum LoG (``medgan.eval.metrics._log``) computed independently: scipy's ``gaussian_laplace`` less its
    truncated kernel's response to a constant (``leak``) times the Gaussian blur, which is what taking
    ``sum(d2) * g`` off the second-derivative kernel amounts to."""
    import numpy as np
    from scipy import ndimage

    leak = float(ndimage.gaussian_laplace(np.ones((1,) * x.ndim), sigma=sigma).flat[0])
    return ndimage.gaussian_laplace(x, sigma=sigma) - leak * ndimage.gaussian_filter(x, sigma=sigma)


@contextlib.contextmanager
def mounted_tmpfs(mnt: Path, size: str) -> Iterator[Path]:
    """A tmpfs of ``size`` (mount's ``-o size=``, e.g. ``"1m"``) mounted on the new folder ``mnt`` for the block: a
    file system that fills up for real (ENOSPC) or can be made read-only; skips where this process may not mount
    one (not root, or a container without the right)."""
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mnt)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill_filesystem(fs: Path, name: str) -> None:
    """Write zeros to ``fs/name`` until the file system is full."""
    fd = os.open(fs / name, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 1):  # big blocks, then single bytes into what is left
            try:
                while os.write(fd, b"\0" * size):
                    pass
            except OSError:
                pass
    finally:
        os.close(fd)
