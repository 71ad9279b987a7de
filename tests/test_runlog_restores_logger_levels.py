"""A run log raises medgan's own loggers to INFO while it is attached (their lines reach ``medgan.log`` whatever
the caller set) and gives them back their levels when it ends: a notebook that set ``medgan`` to WARNING and ran
one batch otherwise got every later INFO line of the session on its terminal."""

from __future__ import annotations

import logging

from pipelines.batch.logging import LOG_NAME, OWN_LOGGERS, RunLog


def test_the_callers_logger_levels_come_back_after_the_run(tmp_path):
    loggers = [logging.getLogger(name) for name in OWN_LOGGERS]
    before = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        with RunLog(tmp_path):
            assert all(lg.getEffectiveLevel() == logging.INFO for lg in loggers)
            logging.getLogger("medgan.batch").info("inside the run")
        assert [lg.level for lg in loggers] == [logging.WARNING] * len(loggers)
        logging.getLogger("medgan.batch").info("after the run")
        text = (tmp_path / LOG_NAME).read_text()
        assert "inside the run" in text and "after the run" not in text
    finally:
        for lg, level in zip(loggers, before, strict=True):
            lg.setLevel(level)
