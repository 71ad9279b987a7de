"""``BatchProvenance.item()`` (what ``monai.data.decollate_batch`` hands each item back) gives every item a record
of its own, nested dicts included: an item whose ``condition`` or ``label_deformation`` was edited (a script
relabelling a decollated item before ``save_scan``) changed the batch's record, and every later decollation of
that batch with it."""

from __future__ import annotations

import torch
from monai.data import MetaTensor, decollate_batch

from medgan.data.synthetic_dataset import BatchProvenance


def _records():
    return [
        {
            "synthetic": True,
            "seed": 11,
            "condition": {"class": None, "scalar": 0.4},
            "label_deformation": {"seed": 3},
        },
        {
            "synthetic": True,
            "seed": 12,
            "condition": {"class": None, "scalar": 0.6},
            "label_deformation": {"seed": 4},
        },
    ]


def test_decollated_items_share_no_nested_record_with_the_batch():
    batch = {"image": MetaTensor(torch.zeros(2, 1, 4, 4), meta={"medgan": BatchProvenance(_records())})}
    first = decollate_batch(batch)
    assert [item["image"].meta["medgan"] for item in first] == _records()
    first[0]["image"].meta["medgan"]["condition"]["scalar"] = 0.9
    first[1]["image"].meta["medgan"]["label_deformation"]["seed"] = 99
    assert batch["image"].meta["medgan"].records == _records()
    again = decollate_batch(batch)
    assert [item["image"].meta["medgan"] for item in again] == _records()
