"""An upscale spec without ``model`` uses the model ``medgan upscale`` and ``medgan batch upscale`` default to.

The command line defaulted to brain-mr-x2-3d while a spec without ``model:`` stopped with "'model' is required".
"""

from __future__ import annotations

from pipelines.batch.spec import load_spec


def test_an_upscale_spec_without_a_model_takes_the_command_line_default(tmp_path):
    spec = tmp_path / "job.yaml"
    spec.write_text("job: upscale\ninput: in\noutput: out\n", encoding="utf-8")
    loaded = load_spec(spec)
    assert loaded.params["model"] == "brain-mr-x2-3d"
    named = tmp_path / "named.yaml"
    named.write_text("job: upscale\ninput: in\noutput: out\nmodel: brain-mr-x2-2d\n", encoding="utf-8")
    assert load_spec(named).params["model"] == "brain-mr-x2-2d"
