"""medgan's use of process-wide warnings state is thread-safe (issue 29).

``warnings.catch_warnings`` swaps process-global state (``warnings.filters``, ``warnings.showwarning``). medgan
entered it per DICOM file read: a header read recorded pydicom's "end of file" warning to tell a truncated file, so
with reads in several threads one thread's warning landed in another thread's list (a good file refused as
truncated) or was lost; and every read ignored all warnings of the process, so other threads' warnings vanished.
These tests read real corpus files (and truncated copies) in thread pools.
"""

from __future__ import annotations

import logging
import sys
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from conftest import require_shared

import medgan
from medgan.errors import ScanReadError
from medgan.io.dicom_frames import quiet_pydicom
from medgan.io.dicom_read import read_dicom_header

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Any]:
    """Good corpus files and a truncated copy that pydicom reports only by a warning (the file ends inside the
    undefined-length encapsulated pixel data: pydicom keeps no element and warns "Unexpected end of file")."""
    corpus = require_shared()
    good = sorted((corpus / "dicom2nifti_siemens_anatomical_001" / "input").iterdir())[:6]
    good += [next((corpus / "dcm_qa_ts_9_jpeg2000_lossless" / "input").iterdir())]
    rle = (corpus / "dcm_qa_ts_4_rle" / "input" / "4.dcm").read_bytes()
    cut = tmp_path_factory.mktemp("cut") / "rle_cut.dcm"
    cut.write_bytes(rle[: len(rle) // 2])
    return {"good": good, "cut": cut, "series": corpus / "dcm_qa_ts_4_rle" / "input"}


def _outcome(path: Path) -> str:
    try:
        read_dicom_header(path)
    except ScanReadError as exc:
        return "truncated" if "truncated" in str(exc) else f"refused: {exc}"
    return "ok"


def _state() -> tuple:
    return (
        [id(f) for f in warnings.filters],
        list(warnings.filters),
        warnings.showwarning,
        logging.getLogger("pydicom").disabled,
        pydicom.config.settings.reading_validation_mode,
    )


def test_concurrent_reads_give_each_file_its_own_outcome(files):
    """Header reads of good files and of a truncated copy in a thread pool, many times: the truncated file always
    and only it is refused as truncated (the old shared record list refused good files and lost the truncation)."""
    paths = [files["cut"], *files["good"]]
    expected = ["truncated"] + ["ok"] * len(files["good"])
    wrong: dict[tuple[str, str], int] = {}
    with ThreadPoolExecutor(4) as pool:
        for _ in range(250):
            for path, want, got in zip(paths, expected, pool.map(_outcome, paths), strict=True):
                if got != want:
                    wrong[(path.name, got)] = wrong.get((path.name, got), 0) + 1
    assert wrong == {}
    with ThreadPoolExecutor(3) as pool:  # whole loads too: pixels decoded while other threads read headers
        loads = list(pool.map(lambda p: _load_outcome(p), [files["series"], files["cut"]] * 6))
    assert loads == ["ok", "truncated"] * 6


def _load_outcome(path: Path) -> str:
    try:
        medgan.load_scan(path)
    except ScanReadError as exc:
        return "truncated" if "truncated" in str(exc) else f"refused: {exc}"
    return "ok"


def test_other_threads_warnings_flow_while_medgan_reads(files):
    """While a medgan read is in progress, a warning another thread raises is shown, not swallowed by a global
    "ignore" filter (nor recorded into medgan's list). The main thread holds a read section open, so that the
    overlap is certain."""
    seen: list[str] = []
    saved_filters, saved_show = warnings.filters[:], warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        seen.append(str(message))

    def other_thread() -> None:
        for i in range(20):
            warnings.warn(f"user-warning-29 {i}", UserWarning, stacklevel=1)

    try:
        warnings.showwarning = show
        warnings.filterwarnings("always", message="user-warning-29", category=UserWarning)
        with quiet_pydicom():
            t = threading.Thread(target=other_thread)
            t.start()
            t.join()
            # and while other threads read files as well
            with ThreadPoolExecutor(3) as pool:
                futures = [pool.submit(_outcome, p) for p in files["good"] * 3]
                other_thread()
                assert all(f.result() == "ok" for f in futures)
    finally:
        warnings.filters[:] = saved_filters
        warnings.showwarning = saved_show
    assert seen == [f"user-warning-29 {i}" for i in range(20)] * 2


def test_pydicom_stays_silent_in_reading_threads_only(files, tmp_path, caplog):
    """Identifying values: pydicom's warnings and log records of a read stay silenced (here a character set that
    does not exist, which pydicom warns and logs about per text element) even with every warning an error; another
    thread's own pydicom log records pass (the filter is per thread, the logger is no longer disabled)."""
    src = files["good"][0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(src)
        ds.SpecificCharacterSet = "ISO_IR 999"
        ds.save_as(tmp_path / "a.dcm")
    saved = warnings.filters[:]
    try:
        warnings.simplefilter("error")
        with caplog.at_level(logging.DEBUG):
            caplog.clear()  # (the records of writing the file above, outside medgan)
            scan = medgan.load_scan(tmp_path / "a.dcm")
            assert scan.shape[0] == 1
            assert [r.getMessage() for r in caplog.records if r.name.startswith("pydicom")] == []
            with quiet_pydicom():
                t = threading.Thread(target=lambda: logging.getLogger("pydicom").warning("other thread 29"))
                t.start()
                t.join()
                logging.getLogger("pydicom").warning("reading thread 29")
    finally:
        warnings.filters[:] = saved
    assert [r.getMessage() for r in caplog.records if r.name == "pydicom"] == ["other thread 29"]


def test_process_state_is_as_before_after_concurrent_loads(files):
    """After overlapping loads the warning filters (the same entries), showwarning and pydicom's logger are as they
    were; and a filter another thread adds while a read is in progress is kept (catch_warnings put back the whole
    list it saw on entry, dropping it)."""
    saved = warnings.filters[:]
    try:
        with quiet_pydicom():
            warnings.filterwarnings("ignore", message="added while reading 29")
            added = warnings.filters[0]
        assert any(f is added for f in warnings.filters)
    finally:
        warnings.filters[:] = saved
    before = _state()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(_load_outcome, [files["series"], files["cut"]] * 4))
        list(pool.map(_outcome, files["good"] * 4))
    assert _state() == before


@pytest.mark.parametrize("setting", ["root logger at ERROR", "every warning an error", "pydicom warnings ignored"])
def test_truncated_file_is_refused_whatever_the_users_warning_and_logging_settings(files, setting):
    """The truncation is told from where pydicom's parse stopped, not from its warning or log record."""
    root = logging.getLogger()
    level, saved = root.level, warnings.filters[:]
    try:
        if setting == "root logger at ERROR":
            root.setLevel(logging.ERROR)
        elif setting == "every warning an error":
            warnings.simplefilter("error")
        else:
            warnings.filterwarnings("ignore", module="pydicom")
        assert _outcome(files["cut"]) == "truncated"
        assert all(_outcome(p) == "ok" for p in files["good"])
    finally:
        root.setLevel(level)
        warnings.filters[:] = saved


def _enters_catch_warnings(fn: Callable[[], Any]) -> bool:
    """Whether calling ``fn`` enters ``warnings.catch_warnings`` (swapping the process's warning filters)."""
    entered = []
    code = warnings.catch_warnings.__enter__.__code__

    def profile(frame, event, arg):
        if event == "call" and frame.f_code is code:
            entered.append(True)

    sys.setprofile(profile)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return bool(entered)


def test_training_and_statistics_helpers_do_not_swap_the_warning_filters():
    """Patch sampling (DataLoader threads), scheduler repositioning and the exact Wilcoxon test avoided their
    warning under a process-wide catch_warnings; they now do not cause it, with the same results."""
    import torch
    from monai.transforms.utils import generate_pos_neg_label_crop_centers

    from medgan.data.patches import PatchSampler, load_volumes
    from medgan.eval.stats import _wilcoxon_exact
    from medgan.train.core import _reposition_scheduler, make_scheduler

    # exact Wilcoxon: no warning under its guard (n <= 50, no ties, no zeros, finite)
    d = np.array([0.3, -1.2, 2.5, 0.7, -0.1, 1.9, 3.3])
    assert not _enters_catch_warnings(lambda: _wilcoxon_exact(d))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p, how = _wilcoxon_exact(d)
    assert how.startswith("exact (scipy") and 0 < p <= 1

    # the warm-up and cosine schedules (LambdaLR): torch's own rates, without get_lr's warning
    for section in (
        {"scheduler": "cosine", "warmup_steps": 5},
        {"scheduler": "step", "warmup_steps": 3, "step_size": 4, "gamma": 0.5},
    ):
        opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        sched = make_scheduler(opt, section, 20)
        assert not _enters_catch_warnings(lambda s=sched: _reposition_scheduler(s, {"last_epoch": 7}))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            want = sched.get_lr()
        assert [g["lr"] for g in opt.param_groups] == want

    # a scan without background voxels: MONAI's centre for it, without MONAI's warning
    t1 = REPO / "sample_data" / "nifti" / "mni_icbm152_2009a_sym" / "t1.nii.gz"
    (vol,) = load_volumes([str(t1)], {"method": "percentile", "lower": 0.5, "upper": 99.5})
    vol = {**vol, "fg": np.arange(vol["mask"].size), "bg": np.array([], dtype=np.int64)}
    sampler = PatchSampler(
        [vol],
        patch_size=[16, 16, 16],
        factor=[2, 2, 2],
        batch_size=1,
        degradation={"method": "interpolate", "noise_std": 0.0},
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not _enters_catch_warnings(lambda: sampler._sample_views(np.random.default_rng(3)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        monai_centre = generate_pos_neg_label_crop_centers(
            [16, 16, 16], 1, 1.0, vol["image"].shape[1:], vol["fg"], vol["bg"], np.random.RandomState(5)
        )[0]
    same = generate_pos_neg_label_crop_centers(
        [16, 16, 16], 1, 1.0, vol["image"].shape[1:], vol["fg"], vol["fg"], np.random.RandomState(5)
    )[0]
    assert [int(c) for c in same] == [int(c) for c in monai_centre]


def test_a_file_cut_inside_a_sequence_is_called_damaged_not_unopenable(tmp_path):
    """pydicom raises its own OSError ("No tag to read at file position ...") for a file that ends inside a sequence
    item; medgan had taken it for a system refusal and said "cannot be opened", sending users to check permissions."""
    corpus = require_shared()
    src = next((corpus / "dcm_qa_xa30_fieldmap_mag_e1" / "input").glob("0001_*.dcm"))
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(src.read_bytes()[:925])
    with pytest.raises(ScanReadError) as err:
        read_dicom_header(cut)
    assert "DICOM header is truncated or corrupt (No tag to read" in str(err.value)
    assert "cannot be opened" not in str(err.value)


def test_a_stray_item_delimiter_followed_by_bytes_is_not_a_truncation(tmp_path):
    """pydicom ends a top-level dataset silently at an item delimiter that belongs to no sequence (some writers leave
    one); bytes after it are not read. medgan always accepted such a file: the parse-position check must too."""
    corpus = require_shared()
    src = sorted((corpus / "dicom2nifti_siemens_anatomical_001" / "input").iterdir())[0]
    stray = tmp_path / "stray.dcm"
    stray.write_bytes(src.read_bytes() + b"\xfe\xff\x0d\xe0\x00\x00\x00\x00" + b"\x00" * 4)
    assert read_dicom_header(stray).Rows == read_dicom_header(src).Rows
    cut = tmp_path / "cut.dcm"  # a real truncation is still one
    cut.write_bytes((corpus / "dcm_qa_ts_4_rle" / "input" / "4.dcm").read_bytes()[:-100])
    assert _outcome(cut) == "truncated"


def test_leftover_quiet_filters_do_not_pile_up_when_other_threads_restore_their_lists():
    """Another thread's catch_warnings entered during a quiet section and left after it puts back its list with the
    section's ignore entry in it; the next section's end removes every such entry (by value), so none accumulate."""
    from medgan.io.dicom_frames import QUIET_MODULES

    def ours() -> int:
        return sum(
            1 for f in warnings.filters if f[0] == "ignore" and f[3] is not None and f[3].pattern == QUIET_MODULES
        )

    before = ours()
    for _ in range(3):
        other = warnings.catch_warnings()
        with quiet_pydicom():
            other.__enter__()  # as another thread would, in the middle of the section
        other.__exit__(None, None, None)  # after it: the section's entry is back in the restored list
    with quiet_pydicom():
        pass
    assert ours() == before
