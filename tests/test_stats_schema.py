"""The schema version is bumped to 2.0: the paired CI changed meaning (bootstrap -> t) and settings fields were
removed (n_resamples, seed), a major change by the module's own rule."""

from medgan.eval import report


def test_schema_major_bump_is_documented():
    assert report.SCHEMA_VERSION.split(".")[0] == "2"  # later 2.x versions only add fields
    assert "2.0:" in report.__doc__ and "Student t" in report.__doc__
