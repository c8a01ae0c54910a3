"""Tuning plumbing that needs no tuning run."""

import logging


def test_task_loggers_survive_an_unnamed_handler_on_meta_schedules_logger(tmp_path):
    """MetaSchedule's logging setup crashed ('NoneType' has no attribute 'format') when its
    global logger carried a handler without a name; tvmq sets such handlers aside and back."""
    from tvmq.tune import _task_loggers

    ms_logger = logging.getLogger("tvm.s_tir.meta_schedule")
    handler = logging.NullHandler()
    ms_logger.addHandler(handler)
    try:
        loggers = _task_loggers(tmp_path, ["task_a", "task_b"])
        assert len(loggers) == 2
        assert handler in ms_logger.handlers
    finally:
        ms_logger.removeHandler(handler)
