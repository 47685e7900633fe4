"""Does an emulated link behave like a real one? The plan's links vs TCP through a shaped veth.

    sudo python benchmarks/real_link.py [--models MobileNetV2 ResNet50] [--mbps 100 50 20]

Linux, as root (``ip netns``, ``tc``). For each rate, a network namespace is joined to this
one by a veth pair whose outgoing side is shaped with ``tc ... tbf rate <mbps>mbit``, and an
``executor relay`` runs inside it. For each model: a throughput plan over two 1-thread
workers of the shipped profile with that link (``--rtt-ms 0``: a veth adds microseconds),
then the same plan run by the local backend twice, alternating: links emulated from the plan
(the default) and real (``--relay``: the tensors cross TCP through the shaped veth to the relay
and back, the model's outputs too on a connection of their own; the way back is not shaped). Reported per run: the link's time per frame (sending
starts -> the last byte is back) next to the plan's, the period next to the plan's.
The shaped direction carries TCP/IP headers too (about 4% at a 1500-byte MTU), which the
plan's ``bytes * 8 / mbps`` leaves out. Writes docs/real-link.md and .json with the command,
machine and date.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

NS, HOST_IF, NS_IF = "dnnsplit-relay", "dnsr0", "dnsr1"
HOST_IP, NS_IP, PORT = "10.77.0.1", "10.77.0.2", 5301


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["MobileNetV2", "ResNet50"])
    parser.add_argument("--mbps", nargs="*", type=float, default=[100.0, 50.0, 20.0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0, help="about how long a run is")
    parser.add_argument("--profile", default="cpu-1t-tensorflow")
    parser.add_argument("--out", default=str(ROOT / "docs" / "real-link.md"))
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite the .md from the .json of an earlier run (no root)")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.render_only:
        import json

        data = json.loads(out.with_suffix(".json").read_text())
        args.repeats = data.get("repeats", args.repeats)
        out.write_text(_report(data["rows"], data["command"].strip(), data["measured_at"],
                               args))
        return
    if os.geteuid() != 0 or not (shutil.which("ip") and shutil.which("tc")):
        sys.exit("needs root and iproute2 (ip, tc): it makes a network namespace and shapes "
                 "a veth")

    from dnnsplit.executor.run import configure_worker_threads, execute

    configure_worker_threads(2, 1)
    from dnnsplit.partition.costs import DeviceSpec, problem_from_graph
    from dnnsplit.partition.planner import make_plans
    from dnnsplit.partition.problem import Link
    from dnnsplit.predictor.files import write_json_atomic, write_text_atomic
    from dnnsplit.predictor.model_graph import TaskGraph
    from dnnsplit.predictor.model_source import load_model

    rows = []
    for mbps in args.mbps:
        with shaped_relay(mbps):
            for name in args.models:
                model = load_model(name)
                tg = TaskGraph.from_keras(model)
                devices = [DeviceSpec("w1", args.profile), DeviceSpec("w2", args.profile)]
                links = {("w1", "w2"): Link(0.0, mbps), ("w2", "w1"): Link(0.0, mbps)}
                plan = make_plans(problem_from_graph(tg, devices, links), "throughput",
                                  ["dp"])[0]
                if len(plan.stages) < 2:
                    print(f"{name} at {mbps:g} Mbps: the plan keeps it on one worker, no link "
                          "to measure", flush=True)
                    continue
                frames = max(20, int(args.seconds * 1000 / plan.predicted.period_ms))
                runs = {"emulated": [], "real": []}
                for _ in range(args.repeats):
                    for kind, relay in (("emulated", None), ("real", f"{NS_IP}:{PORT}")):
                        report = execute(model, plan, frames=frames, relay=relay)
                        if not report.outputs_match:
                            raise SystemExit(f"{name}: outputs differ from the unsplit model")
                        runs[kind].append((report.run.link_ms["w1->next"],
                                           report.measured["period_ms"]))
                predicted_link = plan.predicted.link_ms.get((0, 1), 0.0)
                row = {"model": name, "mbps": mbps, "stages": " / ".join(
                    f"{s['device']}:{len(s['nodes'])}" for s in plan.stages),
                    "frames": frames, "predicted_link_ms": predicted_link,
                    "predicted_period_ms": plan.predicted.period_ms}
                for kind, values in runs.items():
                    row[f"{kind}_link_ms"] = statistics.median(v[0] for v in values)
                    row[f"{kind}_link_range"] = (min(v[0] for v in values),
                                                 max(v[0] for v in values))
                    row[f"{kind}_period_ms"] = statistics.median(v[1] for v in values)
                rows.append(row)
                print(row, flush=True)

    when = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes")
    command = "python benchmarks/real_link.py " + " ".join(argv or sys.argv[1:])
    write_text_atomic(out, _report(rows, command.strip(), when, args))
    write_json_atomic(out.with_suffix(".json"), {"measured_at": when, "command": command,
                                                 "repeats": args.repeats, "rows": rows})
    print(f"wrote {out} and {out.with_suffix('.json').name}")


@contextlib.contextmanager
def shaped_relay(mbps: float):
    """A namespace behind a veth shaped to ``mbps`` (this side's egress), a relay inside."""
    # the bucket must be small next to a frame (tokens refill between frames, and a frame
    # that fits in the bucket leaves at the veth's speed), yet hold a full-size packet

    def sh(*cmd, check=True):
        return subprocess.run(cmd, check=check, capture_output=True, text=True)

    sh("ip", "netns", "del", NS, check=False)
    relay = None
    try:
        sh("ip", "netns", "add", NS)
        sh("ip", "link", "add", HOST_IF, "type", "veth", "peer", "name", NS_IF)
        sh("ip", "link", "set", NS_IF, "netns", NS)
        sh("ip", "addr", "add", f"{HOST_IP}/24", "dev", HOST_IF)
        sh("ip", "link", "set", HOST_IF, "up")
        sh("ip", "netns", "exec", NS, "ip", "addr", "add", f"{NS_IP}/24", "dev", NS_IF)
        sh("ip", "netns", "exec", NS, "ip", "link", "set", NS_IF, "up")
        sh("ip", "netns", "exec", NS, "ip", "link", "set", "lo", "up")
        sh("tc", "qdisc", "add", "dev", HOST_IF, "root", "tbf", "rate", f"{mbps:g}mbit",
           "burst", "3000", "latency", "400ms")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        relay = subprocess.Popen(["ip", "netns", "exec", NS, sys.executable, "-m",
                                  "dnnsplit.executor.cli", "relay", "--host", NS_IP, "--port",
                                  str(PORT)], env=env, stderr=subprocess.PIPE, text=True)
        line = relay.stderr.readline()
        if "listening" not in line:
            raise SystemExit(f"the relay did not start: {line}")
        yield
    finally:
        if relay is not None:
            relay.terminate()
            relay.wait(timeout=10)
        sh("ip", "link", "del", HOST_IF, check=False)
        sh("ip", "netns", "del", NS, check=False)
        time.sleep(0.2)


def _report(rows, command, when, args) -> str:
    lines = [
        "# Emulated links vs real TCP through a shaped link", "",
        f"Measured {when} on {platform.node()} ({platform.machine()}, {os.cpu_count()} cores), "
        "with", "", "    " + command, "",
        "Two 1-thread workers (threads of one process, TensorFlow), the dp throughput plan "
        f"for the link's rate from the `{args.profile}` profile (no latency). Each plan runs "
        f"{args.repeats} times with emulated links and {args.repeats} times with real ones, "
        "alternating: `executor run --relay` sends the tensors w1 hands to w2 (and the "
        "outputs w2 returns to w1) over TCP to an "
        "`executor relay` in a network namespace behind a veth shaped by `tc tbf` to the rate "
        "(this side's egress; the echo back is not shaped). Link ms = per frame, from "
        "sending starts to the last byte back (median of runs, range); period = median time "
        "between frames leaving the pipeline. Where the plan's period is the link's, the "
        "link is saturated: a frame is handed to TCP while the one before is still on the "
        "wire, so its real link ms include that wait (emulated ones do not); compare the "
        "periods there.", "",
        "| model | Mbps | stages | frames | link ms planned | emulated | real (range) | "
        "real / planned | period ms planned | emulated | real |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    saturated = [r for r in rows if r["predicted_link_ms"] >= 0.999 * r["predicted_period_ms"]]
    free = [r for r in rows if r not in saturated]

    def span(values):
        return f"{min(values):.2f}–{max(values):.2f}" if values else "–"

    lines[-2:-2] = [
        f"Saturated links ({len(saturated)} rows): real period / planned "
        f"{span([r['real_period_ms'] / r['predicted_period_ms'] for r in saturated])}, emulated "
        f"{span([r['emulated_period_ms'] / r['predicted_period_ms'] for r in saturated])}. "
        f"Links with room ({len(free)} rows): real link / planned "
        f"{span([r['real_link_ms'] / r['predicted_link_ms'] for r in free])} (TCP/IP headers, "
        "about 4% of a 1500-byte packet, the echo back and the socket calls), and real period "
        f"/ emulated period {span([r['real_period_ms'] / r['emulated_period_ms'] for r in free])}"
        ": the kernel's TCP work and the relay's copying take CPU that the two workers of a "
        "2-core machine need.", ""]
    for r in rows:
        low, high = r["real_link_range"]
        lines.append(
            f"| {r['model']} | {r['mbps']:g} | {r['stages']} | {r['frames']} | "
            f"{r['predicted_link_ms']:.2f} | {r['emulated_link_ms']:.2f} | "
            f"{r['real_link_ms']:.2f} ({low:.2f}–{high:.2f}) | "
            f"{r['real_link_ms'] / r['predicted_link_ms']:.3f} | "
            f"{r['predicted_period_ms']:.2f} | {r['emulated_period_ms']:.2f} | "
            f"{r['real_period_ms']:.2f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
