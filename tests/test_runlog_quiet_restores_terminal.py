"""``RunLog(quiet=True)`` (``--quiet`` of a batch run) quiets the terminal for the run only: afterwards the
caller's terminal handler shows INFO lines again (a notebook that ran one quiet batch lost every later INFO line)."""

from __future__ import annotations

import io
import logging

from pipelines.batch.logging import LOG_NAME, RunLog


def test_quiet_run_log_restores_the_terminal_level(tmp_path):
    stream = io.StringIO()
    terminal = logging.StreamHandler(stream)
    root, logger = logging.getLogger(), logging.getLogger("medgan.batch")
    saved_level = logger.level
    root.addHandler(terminal)
    logger.setLevel(logging.INFO)
    try:
        with RunLog(tmp_path, quiet=True):
            assert terminal.level == logging.WARNING
            logger.info("during the run")
        logger.info("after the run")
    finally:
        root.removeHandler(terminal)
        logger.setLevel(saved_level)
    assert terminal.level == logging.NOTSET
    assert stream.getvalue().splitlines() == ["after the run"]
    assert "during the run" in (tmp_path / LOG_NAME).read_text()  # the file gets INFO lines, quiet or not
