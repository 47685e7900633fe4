"""Link profiles over real TCP: loopback, and a rate-limited veth pair between namespaces."""

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dnnsplit.collectors.link import (LinkError, LinkServer, fit_direction, measure_link,
                                      parse_peer, synthetic_link, transfer_ms)
from dnnsplit.partition.costs import _read_link_file

ROOT = Path(__file__).resolve().parents[2]


def test_fit_recovers_latency_and_bandwidth():
    sizes = [10, 1000, 100_000, 1_000_000, 10_000_000]
    times = [2.0 + s * 8 / (50 * 1000) for s in sizes]  # 2 ms + 50 Mbps
    fit = fit_direction(sizes, times)
    assert fit.latency_ms == pytest.approx(2.0, rel=1e-6)
    assert fit.mbps == pytest.approx(50.0, rel=1e-6)
    with pytest.raises(LinkError, match="does not grow"):
        fit_direction([10, 20, 30], [5, 4, 3])


def test_loopback_profile_is_measured_and_readable_by_the_partitioner(tmp_path):
    with LinkServer(("127.0.0.1", 0)) as server:
        server.start_in_thread()
        peer = ("127.0.0.1", server.server_address[1])
        assert transfer_ms(peer, "U", 1_000_000) > 0
        profile = measure_link(peer, sizes=[1, 1000, 100_000, 1_000_000, 4_000_000], repeats=2)
        server.shutdown()
    assert profile["up"]["mbps"] > 100 and profile["down"]["mbps"] > 100  # loopback is fast
    assert {d for d, _, _ in profile["measured"]} == {"up", "down"}
    path = tmp_path / "lo.json"
    path.write_text(json.dumps(profile))
    up, down = _read_link_file(str(path))
    assert up.mbps == profile["up"]["mbps"] and down.latency_ms == profile["down"]["latency_ms"]


def test_synthetic_profile_and_bad_peers():
    profile = synthetic_link(20, rtt_ms=10)
    assert profile["up"] == {"latency_ms": 5.0, "mbps": 20} and profile["synthetic"]
    with pytest.raises(LinkError, match="> 0 Mbps"):
        synthetic_link(0)
    with pytest.raises(LinkError, match="HOST:PORT"):
        parse_peer("nohost")
    with pytest.raises(LinkError, match="cannot reach link server"):
        transfer_ms(("127.0.0.1", 1), "U", 10, timeout_s=2)


def _can_make_namespaces() -> bool:
    if shutil.which("ip") is None or shutil.which("tc") is None:
        return False
    probe = subprocess.run(["ip", "netns", "add", "dnnsplit-probe"], capture_output=True)
    if probe.returncode != 0:
        return False
    subprocess.run(["ip", "netns", "del", "dnnsplit-probe"], capture_output=True)
    return True


@pytest.mark.skipif(not _can_make_namespaces(), reason="needs root, ip netns and tc")
def test_rate_limited_link_between_namespaces_is_measured_at_its_rate(tmp_path):
    ns_a, ns_b = "dnnsplit-a", "dnnsplit-b"
    commands = [
        f"ip netns add {ns_a}", f"ip netns add {ns_b}",
        "ip link add dnsa type veth peer name dnsb",
        f"ip link set dnsa netns {ns_a}", f"ip link set dnsb netns {ns_b}",
        f"ip -n {ns_a} addr add 10.213.0.1/24 dev dnsa", f"ip -n {ns_b} addr add 10.213.0.2/24 dev dnsb",
        f"ip -n {ns_a} link set dnsa up", f"ip -n {ns_b} link set dnsb up",
        f"ip -n {ns_a} link set lo up", f"ip -n {ns_b} link set lo up",
        # 20 Mbit/s from a to b, 80 Mbit/s back
        f"ip netns exec {ns_a} tc qdisc add dev dnsa root tbf rate 20mbit burst 32kbit latency 400ms",
        f"ip netns exec {ns_b} tc qdisc add dev dnsb root tbf rate 80mbit burst 64kbit latency 400ms",
    ]
    server = None
    try:
        for command in commands:
            subprocess.run(command.split(), check=True, capture_output=True)
        code = ("import sys; sys.path.insert(0, %r); from collectors.link import LinkServer;"
                "LinkServer(('10.213.0.2', 5299)).serve_forever()" % str(ROOT))
        server = subprocess.Popen(["ip", "netns", "exec", ns_b, sys.executable, "-c", code])
        time.sleep(1.5)
        client = ("import sys, json; sys.path.insert(0, %r); from collectors.link import "
                  "measure_link; print(json.dumps(measure_link(('10.213.0.2', 5299), "
                  "sizes=[1000, 100000, 400000, 1000000, 2000000], repeats=1)))" % str(ROOT))
        done = subprocess.run(["ip", "netns", "exec", ns_a, sys.executable, "-c", client],
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr[-1500:]
        profile = json.loads(done.stdout)
        assert profile["up"]["mbps"] == pytest.approx(20, rel=0.25)
        assert profile["down"]["mbps"] == pytest.approx(80, rel=0.3)
    finally:
        if server is not None:
            server.kill()
            server.wait()
        for ns in (ns_a, ns_b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
