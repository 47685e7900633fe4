"""CPU quotas: the group holds the process with the quota asked for, and nothing is left behind."""

import dataclasses
import os
import subprocess
import sys

import pytest

from dnnsplit.collectors import throttle
from dnnsplit.collectors.throttle import CpuQuota, ThrottleError, available, groups, quota_for

needs_cgroups = pytest.mark.skipif(not available(), reason="no writable cgroup CPU controller")


def test_the_quota_is_the_fraction_of_the_period_and_at_least_a_millisecond():
    assert quota_for(0.25, 10_000) == (2_500, 10_000)
    assert quota_for(1.0, 10_000) == (10_000, 10_000)
    assert quota_for(0.05, 10_000) == (1_000, 20_000)  # the period is raised, not the share
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ThrottleError, match=r"in \(0, 1\]"):
            quota_for(bad)


@needs_cgroups
def test_a_process_sits_in_a_group_with_the_quota_asked_for_and_close_removes_it():
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        with CpuQuota(0.25, name="phone", cpus=2) as quota:
            quota.add(busy.pid)
            assert quota.pids() == [busy.pid]
            with open(f"/proc/{busy.pid}/cgroup") as handle:
                assert f"{throttle.PARENT}/phone-{os.getpid()}" in handle.read()
            if quota.version == "v1":
                assert (quota.path / "cpu.cfs_quota_us").read_text().strip() == "5000"
                assert (quota.path / "cpu.cfs_period_us").read_text().strip() == "10000"
            else:
                assert (quota.path / "cpu.max").read_text().split() == ["5000", "10000"]
            assert quota.path.name in groups()
        assert quota.path.name not in groups() and not quota.path.exists()
        with open(f"/proc/{busy.pid}/cgroup") as handle:  # back in the root group
            assert f"{throttle.PARENT}/phone" not in handle.read()
    finally:
        busy.kill()
        busy.wait()


@needs_cgroups
def test_a_group_whose_maker_died_is_removed_by_the_next_one():
    maker = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    _, base = throttle.cgroup_root()
    stale = base / throttle.PARENT / f"server-{int(maker.stdout)}"
    stale.parent.mkdir(exist_ok=True)
    stale.mkdir()
    assert stale.name in throttle.remove_stale()
    assert not stale.exists()


def assert_only_the_phone_ran_throttled(report, fraction: float) -> None:
    """The run matched; the phone's stage ran in a group with ``fraction`` (the kernel counted
    periods in which it had work there), the server's in none, and no group of ours is left."""
    assert report.outputs_match
    phone = next(row for row in report.stages if row["device"] == "phone")
    assert phone["throttled"]["fraction"] == fraction and phone["throttled"]["periods"] > 0
    assert "throttled" not in next(r for r in report.stages if r["device"] == "server")
    assert not [g for g in groups() if g.endswith(f"-{os.getpid()}")]


@needs_cgroups
def test_a_processes_run_throttles_the_device_and_leaves_no_group():
    from dnnsplit.executor.run import execute
    from tests.executor.test_pipeline import branchy_model, plan_for

    model = branchy_model()
    plan = plan_for(model, devices=("phone", "server"))
    report = execute(model, plan, frames=6, backend="processes", throttle={"phone": 0.5})
    assert_only_the_phone_ran_throttled(report, 0.5)
    assert report.notes == ["phone: throttled to 50% of its CPU (--throttle)"]
    assert not [g for g in groups() if g.endswith(f"-{os.getpid()}")]


def test_a_what_if_factor_is_emulated_or_said_not_to_be():
    from dnnsplit.executor.run import emulation
    from dnnsplit.predictor.errors import DnnsplitError
    from tests.executor.test_pipeline import branchy_model, plan_for

    plan = plan_for(branchy_model(), devices=("phone", "server"))
    problem = dataclasses.replace(plan.problem, runtimes={
        "phone": {"profile": "p", "factor": 4.0, "backend": "tensorflow", "threads": 1},
        "server": {"profile": "p", "factor": 0.5, "backend": "tensorflow", "threads": 1}})
    fractions, notes = emulation(problem, "local")
    assert fractions == {}
    assert notes[0].startswith("phone: the plan's x4 (what-if) was not emulated (only "
                               "--backend processes")
    assert "nothing makes a device faster" not in notes[0] and len(notes) == 2
    fractions, notes = emulation(problem, "processes")
    if available():
        assert fractions == {"phone": 0.25}
        assert notes[0] == "phone: the plan's x4 emulated by a CPU quota of 25% of its CPU"
    assert "server: the plan's x0.5 (what-if) was not emulated (nothing makes a device " \
           "faster than this machine)" in notes[-1]
    fractions, _ = emulation(problem, "processes", {"phone": 0.3})
    assert fractions["phone"] == 0.3  # an explicit fraction wins
    with pytest.raises(DnnsplitError, match="needs --backend processes"):
        emulation(problem, "local", {"phone": 0.5})
    with pytest.raises(DnnsplitError, match="does not have"):
        emulation(problem, "processes", {"tablet": 0.5})


def test_collectors_refuse_a_throttle_with_background_load():
    from typer.testing import CliRunner

    from dnnsplit.collectors.cli import app

    result = CliRunner().invoke(app, ["models", "MobileNetV2", "--throttle", "0.5", "--load",
                                      "0,0.5", "--out", "/nonexistent/models.csv"])
    assert result.exit_code == 2
    assert "error: --throttle measures at load 0 only" in result.output


@needs_cgroups
def test_a_throttled_calibration_runs_inside_a_group_and_leaves_none(monkeypatch):
    from typer.testing import CliRunner

    import dnnsplit.collectors.calibrate as calibrate_module
    from dnnsplit.collectors.cli import app

    seen = {}

    def fake_calibrate(threads, data_dir):  # where the probe would be timed
        with open("/proc/self/cgroup") as handle:
            seen["cgroup"] = handle.read()
        return {"probe_ms": 1.0}

    monkeypatch.setattr(calibrate_module, "calibrate", fake_calibrate)
    result = CliRunner().invoke(app, ["calibrate", "--throttle", "0.25"])
    assert result.exit_code == 0, result.output
    assert f"{throttle.PARENT}/collect-{os.getpid()}" in seen["cgroup"]
    with open("/proc/self/cgroup") as handle:
        assert throttle.PARENT not in handle.read()  # back where it was
    assert not [g for g in groups() if g.endswith(f"-{os.getpid()}")]
