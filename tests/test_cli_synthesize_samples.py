"""``medgan synthesize``: with ``-n N`` each file holds its own sample (the library's sample i, in order), and
``--deform`` deforms the label map with ``--seed``, so two seeds give two layouts, each the library's."""

from __future__ import annotations

import nibabel as nib
import numpy as np
from conftest import mni_tissue_slice, save_tiny_synthesizer

from pipelines import cli


def _tiny_model_labels(tmp_path):
    """The tiny synthesizer (labels 0, 1, 2) and a real MNI tissue slice in its values: the slice's 2 (grey matter)
    and 3 (white matter) become 1 and 2."""
    model = save_tiny_synthesizer(tmp_path / "tiny.safetensors")
    labels = mni_tissue_slice(tmp_path / "labels.nii.gz", 90)
    img = nib.load(labels)
    values = np.asarray(img.dataobj)
    nib.save(nib.Nifti1Image((values - (values > 0)).astype(np.uint8), img.affine), labels)
    return model, labels


def test_each_sample_file_holds_its_own_sample(tmp_path):
    from medgan import Synthesizer, load_scan

    model, labels = _tiny_model_labels(tmp_path)
    out = tmp_path / "syn.nii.gz"
    argv = ["synthesize", "--model", str(model), "--labels", str(labels), "--out", str(out), "-n", "3"]
    assert cli.main([*argv, "--seed", "5", "--no-progress"]) == cli.EXIT_OK
    written = [load_scan(tmp_path / f"syn_{i:03d}.nii.gz").numpy()[0] for i in range(3)]
    expected = Synthesizer.from_pretrained(model, device="cpu").generate(load_scan(labels), n=3, seed=5).numpy()
    for i in range(3):
        np.testing.assert_allclose(written[i], expected[i], rtol=1e-5, atol=1e-4)
    assert not np.allclose(written[0], written[1])  # three samples, not one written three times


def test_deform_follows_the_seed(tmp_path):
    from medgan import load_scan
    from medgan.data.labels import deform_labels

    model, labels = _tiny_model_labels(tmp_path)
    layouts = {}
    for seed in (1, 2):
        out = tmp_path / f"s{seed}.nii.gz"
        argv = ["synthesize", "--model", str(model), "--labels", str(labels), "--out", str(out), "--deform"]
        assert cli.main([*argv, "--seed", str(seed), "--no-progress"]) == cli.EXIT_OK
        layouts[seed] = load_scan(tmp_path / f"s{seed}_labels.nii.gz").numpy()
        np.testing.assert_array_equal(layouts[seed], deform_labels(load_scan(labels), seed=seed).numpy())
    assert not np.array_equal(layouts[1], layouts[2])


def test_deformed_labels_default_name_follows_the_outs_suffix(tmp_path):
    """A ``.nii`` OUT gets a ``.nii`` label map beside it (``<stem>_labels.nii``), as the module says."""
    model, labels = _tiny_model_labels(tmp_path)
    out = tmp_path / "syn.nii"
    argv = ["synthesize", "--model", str(model), "--labels", str(labels), "--out", str(out), "--deform", "--seed", "1"]
    assert cli.main([*argv, "--no-progress"]) == cli.EXIT_OK
    assert sorted(p.name for p in tmp_path.glob("syn*")) == ["syn.json", "syn.nii", "syn_labels.json", "syn_labels.nii"]
