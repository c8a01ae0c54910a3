"""The tuning time budget (``--tuning-time``, ``Config.tuning_time``): parsing, the split over a
compile's modules, the deadline kept, the costliest kernels tuned first, a warm database tuning
nothing, records shared by two models. Budgets of seconds on float denses (one task per shape)."""

import time

import pytest

from test_tune import _dense_chain, _dense_module


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("10m", 600), ("1h", 3600), ("1.5h", 5400), (45, 45),
                                           ("0", 0), (" 2M ", 120), (2.5, 2.5)])
def test_a_duration_is_seconds_or_a_number_with_s_m_h(text, seconds):
    from tvmq.tune import parse_duration

    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["10x", "-5", "m", "", "ten minutes", "1h30m", True])
def test_a_bad_duration_is_one_clear_error(text):
    from tvmq.config import Config
    from tvmq.errors import TvmqError

    with pytest.raises(TvmqError, match=r"--tuning-time, Config.tuning_time\) is not a duration: give seconds"):
        Config(tuning_time=text)


def test_a_bad_tuning_time_on_the_command_line_is_one_line(tmp_path, capsys):
    from tvmq.cli import main

    code = main(["demo", "--out", str(tmp_path / "out"), "--tuning-time", "5 minutes"], isolated=False)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and err == ["tvmq: error: tuning time '5 minutes' (--tuning-time, Config.tuning_time) is not a "
                                 "duration: give seconds (90) or 90s, 10m, 1h"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("flags, trials, seconds", [
    ([], 0, 300), (["--trials", "0"], 0, 0), (["--tuning-time", "0"], 0, 0), (["--trials", "40"], 40, 0),
    (["--tuning-time", "90s"], 0, 90), (["--tuning-time", "2m", "--trials", "8"], 8, 120)])
def test_the_cli_tunes_five_minutes_unless_a_flag_says_otherwise(flags, trials, seconds):
    """No flag: the default time; ``--trials`` alone: today's trial budget; both: each bounds."""
    from tvmq.cli import _config, _parser

    config = _config(_parser().parse_args(["demo", "--out", "x", *flags]))
    assert (config.trials, config.tuning_time, config.tunes) == (trials, seconds, bool(trials or seconds))


def test_the_clock_gives_each_phase_its_part_and_what_the_ones_before_left():
    from tvmq.tune import TuningClock

    clock = TuningClock(100.0)
    start = time.monotonic()
    fp32 = clock.phase(0.4)
    assert fp32.seconds == 40 and abs(fp32.deadline - (start + 40)) < 1
    int8 = clock.phase(0.4)  # fp32 spent nothing: its 40 s are int8's to spend
    assert int8.seconds == 40 and abs(int8.deadline - (start + 80)) < 1
    rebuild = clock.phase(0.2)
    assert rebuild.seconds == 20 and abs(rebuild.deadline - (start + 100)) < 1
    assert clock.phase(0.2).deadline <= start + 100 + 1, "a phase past the split still ends with the clock"


COSTS = {"matmul1": 50.0, "matmul": 5.0, "matmul2": 0.5}  # µs per call: the middle dense costs most


def _profile(fused):
    """A stand-in for the untuned module's kernel timer: the denses' µs of :data:`COSTS`."""
    names = {gv.name_hint for gv in fused.functions}
    assert set(COSTS) <= names, names
    return [{"kernel": name, "calls": 1, "us": us} for name, us in COSTS.items()]


def _budgeted(db, seconds, mod=None):
    from tvmq.targets import get_target
    from tvmq.tune import TimeBudget, tune

    mod = mod or _dense_chain([32, 16, 24, 8])
    start = time.monotonic()
    summary = tune(mod, get_target("host"), 0, db, budget=TimeBudget(seconds, start + seconds, _profile))[1]
    return summary, time.monotonic() - start


@pytest.fixture(scope="module")
def tiny_budget(tmp_path_factory):
    db = tmp_path_factory.mktemp("budget") / "db"
    return db, *_budgeted(db, 20.0)


def test_a_tiny_budget_stops_in_time_and_tunes_the_costliest_kernel_first(tiny_budget):
    """20 s for three kernels: the costliest is tuned first; no round starts that the deadline
    cannot hold, so the run ends within a round of the budget (the one it was in: the machine
    is shared, a round takes 5-40 s); what was not reached is reported, cheapest last."""
    _, summary, elapsed = tiny_budget
    timed = summary["time_budget"]
    tuned = [row["kernel"] for row in timed["tasks"]]
    assert tuned and tuned + timed["left_untuned"] == sorted(COSTS, key=lambda k: -COSTS[k])
    slowest_round = max(row["last_round_s"] or 0 for row in timed["tasks"])
    assert elapsed <= 20.0 + slowest_round + 5, (elapsed, timed)
    first = timed["tasks"][0]
    assert first["trials"] >= 1 and first["untuned_us"] == 50.0 and first["tuned_us"] > 0
    assert first["share_pct"] == pytest.approx(100 * 50 / 55.5, abs=0.1)
    assert summary["measured"] == sum(row["trials"] for row in timed["tasks"])


def test_a_warm_database_runs_no_new_trials(tiny_budget):
    """The same module and budget again: the database gave it that much time already."""
    db, _, _ = tiny_budget
    again, elapsed = _budgeted(db, 20.0)
    assert again["measured"] == 0 and "time_budget" not in again
    assert elapsed < 20, elapsed


def test_records_are_reused_across_two_models_with_one_identical_kernel(tmp_path):
    """Two models sharing one database (the default: per target, not per model): the second has
    the first's dense (4 x 32 -> 16) and a new one, and tunes only the new one."""
    from tvmq.targets import get_target
    from tvmq.tune import tune

    spec, db = get_target("host"), tmp_path / "db"
    first = tune(_dense_module(), spec, 2, db)[1]
    assert first["tuned_now"] == 1
    second = tune(_dense_chain([32, 16, 8]), spec, 4, db)[1]
    assert second["tasks"] == 2 and second["from_database"] == 1 and second["tuned_now"] == 1


def test_the_default_database_is_shared_by_models(monkeypatch, tmp_path):
    """``<cache>/tuning/<target key>``: no model name in it, so identical kernels meet their records."""
    from tvmq.stages import lower
    from tvmq.targets import get_target

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert lower.default_tuning_db(get_target("host")) == tmp_path / "tvmq" / "tuning" / lower.target_key(
        get_target("host"))


def test_cli_default_tunes_only_where_candidates_can_be_timed():
    """No tuning flag: the host tunes for the default time; an emulated ARM target builds untuned
    (tuning it would be an error, and a valid command line is never refused)."""
    from tvmq import cli
    from tvmq.targets import get_target

    host = cli._config(cli._parser().parse_args(["compile", "m.onnx", "--out", "o"]))
    assert host.tuning_time > 0 and host.trials == 0
    arm = cli._config(cli._parser().parse_args(["compile", "m.onnx", "--out", "o", "--target", "arm"]))
    assert arm.tuning_time == 0 and arm.trials == 0 and not get_target("arm").executor.timed


def test_tuning_an_emulated_target_fails_in_one_line_before_calibration():
    import tvmq
    from tvmq.errors import TvmqError

    with pytest.raises(TvmqError, match=r"^--trials 4: tuning times candidates on the arm device, .*--trials 0$"):
        tvmq.compile("no-such-model.onnx", calib=None, config=tvmq.Config(target="arm", trials=4))
