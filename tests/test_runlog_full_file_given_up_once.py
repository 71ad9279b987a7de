"""A run log that cannot grow (its file system full; here a file-size limit, so no root is needed) is given up
with one warning and the run's lines go on to the terminal: the handler marks itself failed before it warns, or
the warning, sent through the same root logger, came back to the failing file again and again (a
``--- Logging error ---`` traceback per line, or a RecursionError)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import cli_env

LIMIT = 20_000  # bytes any file of the child may grow to


def test_a_run_log_that_cannot_grow_is_given_up_with_one_warning(tmp_path):
    script = textwrap.dedent(
        f"""
        import logging, resource, signal
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG, not a kill
        from pipelines.batch.logging import RunLog
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
        resource.setrlimit(resource.RLIMIT_FSIZE, ({LIMIT}, {LIMIT}))
        log = logging.getLogger("medgan.batch")
        with RunLog("."):
            for i in range(400):
                log.info("scan %03d done %s", i, "x" * 80)
            log.warning("the last line")
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        cwd=tmp_path,
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    err = proc.stderr
    assert "Logging error" not in err and "Traceback" not in err and "RecursionError" not in err, err[-3000:]
    given_up = [line for line in err.splitlines() if "cannot write the run log" in line]
    assert given_up == [
        f"WARNING {tmp_path / 'medgan.log'}: cannot write the run log (File too large); its lines go to the terminal only"
    ], err[-3000:]
    assert err.splitlines()[-1] == "WARNING the last line"
    assert 0 < (tmp_path / "medgan.log").stat().st_size <= LIMIT
