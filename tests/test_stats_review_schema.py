"""The schema version is bumped to 2.0: the paired CI changed meaning (bootstrap -> t) and settings fields were
removed (n_resamples, seed), a major change by the module's own rule."""

from medgan.eval import report


def test_schema_major_bump_is_documented():
    assert report.SCHEMA_VERSION == "2.0"
    assert "2.0:" in report.__doc__ and "Student t" in report.__doc__
