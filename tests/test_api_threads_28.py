"""The Python API in long-running research code: what ``SuperResolver.upscale`` returns, and process-wide switches.

* On the CPU, ``upscale`` ran under ``torch.inference_mode`` and returned an inference tensor: the caller's
  ``y[y < 10] = 0`` raised (after writing), and a loss on the output could not be backpropagated; on CUDA the same
  call returned an ordinary tensor. It is an ordinary tensor on every device now, with the same voxels.
* ``_tf32`` (``precision="fp32"`` on CUDA) sets process-wide switches: two threads upscaling at once changed them
  under each other's forward and the last to finish restored the other's setting. The block holds a lock now. The
  switches exist without a GPU, so this is checked on the CPU.
"""

from __future__ import annotations

import threading

import pytest
import torch
from conftest import mni_t1_path
from monai.transforms import SpatialCrop

import medgan
from medgan.infer.superres import _tf32

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.mark.parametrize("model", ["brain-mr-x2-3d", "brain-mr-x2-2d"])
def test_an_upscaled_scan_is_an_ordinary_tensor(model):
    scan = SpatialCrop(roi_start=(70, 90, 70), roi_end=(94, 114, 94))(medgan.load_scan(mni_t1_path()))
    y = medgan.SuperResolver.from_pretrained(model, device="cpu").upscale(scan, progress=False)
    assert not y.is_inference()
    y[y < 10] = 0  # raised "Inplace update to inference tensor outside InferenceMode" on the CPU
    assert float(y.min()) >= 0
    conv = torch.nn.Conv3d(1, 1, 3)
    conv(y.as_tensor()[None]).mean().backward()  # "Inference tensors cannot be saved for backward"
    assert conv.weight.grad is not None


def test_tf32_blocks_of_two_threads_do_not_change_each_others_setting():
    original = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    inside_b: list[tuple[bool, bool]] = []
    b_inside, a_checked = threading.Event(), threading.Event()

    def b() -> None:
        with _tf32(False):
            b_inside.set()
            a_checked.wait(5)  # B stays in its block while A looks (A waits for it only so long: B is held off)
            inside_b.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))

    thread = threading.Thread(target=b)
    with _tf32(True):
        thread.start()
        b_inside.wait(1.0)
        seen_by_a = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
        a_checked.set()
    thread.join(10)
    assert seen_by_a == (True, True)  # B's "fp32" block switched TF32 off in the middle of A's forward
    assert inside_b == [(False, False)]
    assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == original
