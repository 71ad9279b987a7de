"""medgan as installed from its wheel, not run from this checkout: the wheel holds every file of the packages, and
the installed package works without ``sample_data/`` beside it and whatever ``pipelines/`` the current folder holds.

The wheel is built from this working tree with the test environment's setuptools (the ``test`` extra), offline.
An installed package is the wheel unpacked into a folder on ``PYTHONPATH``, run with ``python -S``: the checkout's
editable install (a finder that ``site`` sets up) would otherwise resolve ``pipelines.*`` from the checkout and hide
what a wheel does.
"""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from medgan import __version__
from pipelines.demo import default_data_dir
from tests.conftest import REPO, SAMPLE_DATA, cli_env

#: what a wheel is built from besides the two packages
BUILD_FILES = ("pyproject.toml", "README.md", "LICENSE")
SHIPPED = ("brain-mr-x2-2d", "brain-mr-x2-3d", "brain-mr-through-plane-x4", "brain-t1-tissue-2d", "synthetic-detector")


def _git_files(*args: str) -> list[str]:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: the tracked files are unknown")
    out = subprocess.run(["git", "ls-files", "-z", *args], cwd=REPO, capture_output=True, check=True)
    return [name for name in out.stdout.decode().split("\0") if name]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel of this working tree: its tracked and new (not ignored) files, copied, then built offline."""
    src = tmp_path_factory.mktemp("src")
    # a copy: building in the checkout writes build/ and *.egg-info there, and picks up any ignored junk
    names = _git_files("--cached", "--others", "--exclude-standard", "--", "medgan", "pipelines")
    for name in [*names, *BUILD_FILES]:
        if (REPO / name).is_file():  # a tracked file deleted in the working tree is not part of it
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "pip", "wheel", "-q", "--no-index", "--no-deps", "--no-build-isolation"]
    proc = subprocess.run([*cmd, "-w", str(dist), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    (found,) = dist.glob("medgan-*.whl")
    return found


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel unpacked: a site-packages folder holding medgan and pipelines only (no sample_data beside them)."""
    target = tmp_path_factory.mktemp("site-packages")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(target)
    return target


def _run_installed(installed: Path, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``python -S ARGS`` in ``cwd`` with the installed medgan, then this environment's dependencies, on the path."""
    deps = [*site.getsitepackages(), site.getusersitepackages()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(installed), *deps])}
    return subprocess.run([sys.executable, "-S", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture
def shadowing_cwd(tmp_path) -> Path:
    """A project folder with a ``pipelines`` package of its own (common in ML projects), empty."""
    (tmp_path / "pipelines").mkdir()
    (tmp_path / "pipelines" / "__init__.py").write_text("")
    return tmp_path


@pytest.mark.slow
def test_wheel_holds_every_tracked_file_of_the_packages(wheel):
    """``pretrained/*`` did not reach ``medgan/pretrained/configs/*.yaml``: the installed cards' Reproduce command
    then fell back to the training machine's path. Every file git tracks under medgan/ and pipelines/ is shipped."""
    names = set(zipfile.ZipFile(wheel).namelist())
    tracked = [n for n in _git_files("--", "medgan", "pipelines") if (REPO / n).is_file()]
    assert any(n.startswith("medgan/pretrained/configs/") for n in tracked)  # the case that was missed
    assert [n for n in tracked if n not in names] == []
    # the licence the metadata declares travels with it (PEP 639 license-files)
    assert "medgan-" + __version__ + ".dist-info/licenses/LICENSE" in names
    meta = zipfile.ZipFile(wheel).read(f"medgan-{__version__}.dist-info/METADATA").decode()
    assert "License-Expression: Apache-2.0" in meta and "License-File: LICENSE" in meta


@pytest.mark.slow
def test_installed_model_cards_name_no_absolute_path(installed, tmp_path):
    """An installed card showed the training machine's ``/.../sample_data/...`` paths (kept only where this
    installation had a ``sample_data/`` beside the package) and, without the shipped configs, its recorded command."""
    script = (
        "import medgan\n"
        "from medgan.infer.pretrained import PRETRAINED_DIR, render_model_card\n"
        "print(medgan.__file__)\n"
        f"for name in {SHIPPED!r}:\n"
        "    print(render_model_card(PRETRAINED_DIR / f'{name}.safetensors'))\n"
    )
    proc = _run_installed(installed, ["-c", script], tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.splitlines()[0].startswith(str(installed))  # the installed package, not the checkout
    assert not (installed / "sample_data").exists()
    paths = []
    for line in proc.stdout.splitlines():
        for key in ("- train: ", "- held-out validation (other subjects): "):
            if line.startswith(key):
                paths += line.removeprefix(key).split(", ")
    assert "sample_data/nifti/mni_icbm152_2009a_sym/t1.nii.gz" in paths
    assert [p for p in paths if os.path.isabs(p)] == []
    for name in SHIPPED[:4]:
        assert (installed / "medgan" / "pretrained" / "configs" / f"{name}.yaml").is_file()
        sub = "train-cgan" if name == "brain-t1-tissue-2d" else "train-sr"
        assert f"\nmedgan {sub} medgan/pretrained/configs/{name}.yaml\n" in proc.stdout


@pytest.mark.slow
def test_installed_command_runs_as_python_m_medgan_beside_a_local_pipelines_package(installed, shadowing_cwd):
    """``python -m medgan`` could not be run, and ``python -m pipelines.cli`` (the torchrun route) imported the
    current folder's ``pipelines`` package instead of medgan's."""
    proc = _run_installed(installed, ["-m", "medgan", "--version"], shadowing_cwd)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip() == f"medgan {__version__}"
    proc = _run_installed(installed, ["-m", "medgan", "train-sr", "--help"], shadowing_cwd)
    assert proc.returncode == 0, proc.stderr[-4000:]
    # the example configs the help names are where this installation holds them
    help_text = " ".join(proc.stdout.split())
    assert f"{installed / 'medgan' / 'train' / 'configs'}/*.yaml" in help_text.replace(" ", "")
    assert (installed / "medgan" / "train" / "configs" / "srresnet3d_x2.yaml").is_file()


@pytest.mark.slow
def test_installed_demo_reads_sample_data_of_the_current_folder(installed, tmp_path):
    """Run in a checkout with medgan installed from a wheel, ``medgan demo`` looked only beside the package
    (site-packages/sample_data) and told the user to run it from a checkout."""
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "sample_data").symlink_to(SAMPLE_DATA, target_is_directory=True)
    script = "from pipelines.demo import default_data_dir\nprint(default_data_dir())\n"
    proc = _run_installed(installed, ["-c", script], checkout)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip() == str(checkout / "sample_data")
    # elsewhere the error says the data is not in the package, and how to give it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = _run_installed(installed, ["-m", "medgan", "demo", "--out", str(elsewhere / "out")], elsewhere)
    assert proc.returncode == 1
    assert "not in the installed package" in proc.stderr
    assert "pass --data PATH/TO/medgan/sample_data (a checkout's)" in proc.stderr
    assert not (elsewhere / "out").exists()


def test_python_m_medgan_runs_beside_a_local_pipelines_package(shadowing_cwd):
    """``python -m medgan`` is the command (``torchrun ... -m medgan train-sr``), from any folder."""
    proc = subprocess.run(
        [sys.executable, "-m", "medgan", "--version"],
        cwd=shadowing_cwd,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip() == f"medgan {__version__}"


def test_demo_data_defaults_to_sample_data_in_the_current_folder(tmp_path, monkeypatch):
    """A package without ``sample_data/`` beside it (installed from a wheel) run in a checkout's root folder: the
    demo reads the checkout's ``sample_data/``."""
    package_root = tmp_path / "site-packages"  # what a wheel installs: the packages, no sample_data
    package_root.mkdir()
    monkeypatch.chdir(REPO)
    found = default_data_dir(package_root)
    assert found == SAMPLE_DATA and (found / "MANIFEST.json").is_file()
    # beside the package wins: a checkout (or editable install) reads its own data wherever it runs
    monkeypatch.chdir(tmp_path)
    assert default_data_dir(REPO) == SAMPLE_DATA
    # neither holds it: the package's own is the one named in the error
    assert default_data_dir(package_root) == package_root / "sample_data"


def test_the_sdist_holds_the_packages_and_no_unusable_test_suite(tmp_path):
    """setuptools' default put tests/test_*.py in the sdist without conftest.py or sample_data/: a suite that cannot
    import. The sdist holds what builds the wheel (the packages, their weights and configs) and the licence."""
    import tarfile

    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout")
    src = tmp_path / "src"
    subprocess.run(["git", "clone", "-q", str(REPO), str(src)], check=True)
    shutil.copy(REPO / "MANIFEST.in", src / "MANIFEST.in")  # the working tree's, committed or not
    build = "from setuptools import build_meta as b; import sys; print(b.build_sdist(sys.argv[1]))"
    out = subprocess.run(
        [sys.executable, "-c", build, str(tmp_path / "dist")], cwd=src, capture_output=True, text=True, check=True
    )
    with tarfile.open(tmp_path / "dist" / out.stdout.strip().splitlines()[-1]) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    assert not [n for n in names if n.startswith("tests/")]
    assert {"LICENSE", "pyproject.toml", "medgan/pretrained/brain-mr-x2-3d.safetensors"} <= names
    assert "pipelines/batch/executors.py" in names and "medgan/py.typed" in names
