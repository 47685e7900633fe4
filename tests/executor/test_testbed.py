"""The two-host testbed: up, down, nothing left behind (also when its maker is killed), and a
run that loses its server stops naming the stage."""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dnnsplit.collectors.throttle import groups
from dnnsplit.executor.testbed import (ADDRESSES, Testbed, leftovers, namespaces, requirements,
                                       teardown)

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(requirements() is not None, reason=str(requirements()))
PREFIX = "dnnsplit-tbtest"


def test_the_network_comes_up_shaped_and_goes_without_a_trace():
    assert not leftovers(PREFIX)
    with Testbed(mbps=5, ray=False, prefix=PREFIX) as bed:
        assert {f"{PREFIX}-phone", f"{PREFIX}-server"} <= set(namespaces())
        shaped = bed.run_on("phone", ["tc", "qdisc", "show"]).stdout
        assert "tbf" in shaped and "5Mbit" in shaped
        reach = bed.run_on("phone", [sys.executable, "-c", textwrap.dedent(f"""
            import socket
            s = socket.socket(); s.settimeout(2)
            print(s.connect_ex(("{ADDRESSES['server']}", 9)))""")])
        assert reach.stdout.strip() in {"111", "0"}  # refused = the server's host answered
        # a process inside can make a CPU quota group and join it (ip netns exec hides the
        # host's cgroups: the testbed mounts them again), and it is removed after
        inside = bed.run_on("phone", [sys.executable, "-c", textwrap.dedent("""
            import os
            from dnnsplit.collectors.throttle import CpuQuota, available
            print(available())
            with CpuQuota(0.5, name="tbtest-inside") as quota:
                quota.add(os.getpid())
                print(quota.pids() == [os.getpid()])""")],
            env={"PYTHONPATH": str(ROOT.parent)})
        assert inside.stdout.split() == ["True", "True"], inside.stderr[-800:]
    assert not leftovers(PREFIX)
    assert not [g for g in groups() if g.startswith("tbtest-inside")]


def test_a_testbed_whose_maker_was_killed_is_torn_down_by_the_next():
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(ROOT)!r})
        from dnnsplit.executor.testbed import Testbed
        Testbed(mbps=5, ray=False, prefix={PREFIX!r}).up()
        print("UP", flush=True)
        time.sleep(600)
    """)
    maker = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert maker.stdout.readline().strip() == "UP"
        maker.send_signal(signal.SIGKILL)
        maker.wait(timeout=10)
        assert leftovers(PREFIX)  # killed: it could not clean up
        teardown(PREFIX)
        assert not leftovers(PREFIX)
    finally:
        maker.kill()
        teardown(PREFIX)


@pytest.mark.slow
def test_killing_the_servers_node_mid_run_stops_the_run_naming_the_stage(tmp_path):
    pytest.importorskip("ray")
    from dnnsplit.partition.costs import DeviceSpec, parse_links, problem_from_graph
    from dnnsplit.partition.graph import TaskGraph
    from dnnsplit.partition.planner import make_plans
    from dnnsplit.predictor.model_source import load_model

    tg = TaskGraph.from_keras(load_model("MobileNetV2"))
    problem = problem_from_graph(tg, [DeviceSpec("phone", "cpu-1t-tensorflow"),
                                      DeviceSpec("server", "cpu-1t-tensorflow")],
                                 parse_links(["phone", "server"], [], 1000.0, 0.0))
    plan = make_plans(problem, "throughput", ["dp"])[0]
    assert len(plan.stages) == 2
    plan.save(tmp_path / "plan.json")
    with Testbed(mbps=100, phone_fraction=None, prefix=PREFIX) as bed:
        run = bed.popen_on("phone", [
            sys.executable, "-m", "dnnsplit.executor.cli", "run", "MobileNetV2", "--plan",
            str(tmp_path / "plan.json"), "--backend", "ray", "--address", bed.address,
            "--ray-node", "phone=phone", "--ray-node", "server=server", "--no-baseline",
            "--frames", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT.parent)})
        deadline = time.monotonic() + 180
        started = False
        while time.monotonic() < deadline and not started:  # until frames flow
            line = run.stderr.readline()
            started = "frame/s" in line or "frames through" in line
        assert started
        time.sleep(3)
        killed = time.monotonic()
        bed.stop_node("server")
        _, err = run.communicate(timeout=60)
        assert time.monotonic() - killed < 30
        assert run.returncode == 2
        assert "error:" in err and "server" in err.splitlines()[-1]
    assert not leftovers(PREFIX)
