"""A writer that leaves nothing at ``atomic_path``'s temporary name (a library that wrote under another name or
not at all) is a MedganError saying nothing was written: the rename of the missing file otherwise failed with
"No such file or directory" for an output whose folder exists, which sent the user looking for a missing folder."""

from __future__ import annotations

import pytest

from medgan.errors import MedganError
from medgan.io.atomic import atomic_path


def test_nothing_written_is_said_and_the_earlier_file_stays(tmp_path):
    out = tmp_path / "report.html"
    out.write_text("the earlier report")
    with pytest.raises(MedganError, match="report.html: nothing was written"), atomic_path(out) as tmp:
        tmp.with_name("elsewhere.html").write_text("written under another name")
    assert out.read_text() == "the earlier report"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "elsewhere.html",
        "report.html",
    ]
