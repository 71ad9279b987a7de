"""``medgan run``: a spec value of the wrong YAML type (a list or mapping) is a one-line ConfigError naming the key
and the file, for every key, never a traceback."""

from __future__ import annotations

import pytest

from pipelines.cli import main


@pytest.mark.parametrize("text", ["job: [upscale]\n", "job: {upscale: 1}\n", "job: [[1]]\n"])
def test_a_job_that_is_a_list_or_mapping_is_a_config_error(tmp_path, capsys, text):
    spec = tmp_path / "job.yaml"
    spec.write_text(text + "input: a\noutput: b\nmodel: m.safetensors\n")
    assert main(["run", str(spec)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert str(spec) in err and "'job' must be text" in err


def test_a_job_override_that_is_a_mapping_is_a_config_error(tmp_path, capsys):
    spec = tmp_path / "job.yaml"
    spec.write_text("job: upscale\ninput: a\noutput: b\nmodel: m.safetensors\n")
    assert main(["run", str(spec), "--set", "job={a: 1}"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(spec) in err and "'job' must be text" in err


def test_every_key_refuses_values_of_the_wrong_yaml_type_with_a_config_error(tmp_path):
    from medgan.errors import ConfigError
    from pipelines.batch.spec import SCHEMA, load_spec

    base = {
        "upscale": "input: a\noutput: b\nmodel: m.safetensors\n",
        "synthesize": "input: a\noutput: b\nmodel: m.safetensors\n",
        "evaluate": "output: b\npred: p\nref: r\n",
    }
    spec = tmp_path / "job.yaml"
    odd = [[1], {"a": 1}, [[1]], {"a": [1]}, float("nan"), float("inf"), b"x"]
    for job, keys in SCHEMA.items():
        spec.write_text(f"job: {job}\n" + base[job])
        for key in keys:
            for value in odd:
                with pytest.raises(ConfigError, match=f"{key}"):
                    load_spec(spec, {key: value})
