"""Two hosts on one machine: a phone and a server in network namespaces of their own, joined
by a shaped veth pair, each a Ray node.

>>> with Testbed(mbps=10, phone_fraction=0.25) as bed:        # doctest: +SKIP
...     bed.run_on("phone", ["executor", "run", ...])

Linux, as root (``ip netns``, ``tc``, cgroups). :meth:`Testbed.up`:

- namespaces ``<prefix>-phone`` and ``<prefix>-server`` (loopback up in each), a veth pair
  between them (``10.79.0.1`` on the phone's side, ``10.79.0.2`` on the server's), both ends'
  outgoing traffic shaped with ``tc qdisc ... tbf rate <mbps>mbit`` (a token bucket: the
  bandwidth is real; ``netem`` delay does not work on these machines, so a round-trip time is
  emulated by the executor, see ``executor run --link-latency-only``);
- a Ray head node in the phone's namespace (``--resources {"phone": 1}``) and a worker node in
  the server's (``{"server": 1}``), one CPU each: the phone's processes pinned to CPU
  ``phone_cpu`` and confined to ``phone_fraction`` of it by a CPU quota
  (:class:`~dnnsplit.collectors.throttle.CpuQuota`; every process the node starts later
  inherits it), the server's pinned to ``server_cpu``.

Stages placed with ``--ray-node phone=phone --ray-node server=server`` then exchange their
tensors through Ray's object stores over the shaped link. :meth:`Testbed.down` (also on an
exception or Ctrl-C inside the ``with`` block, and idempotent) stops both Ray nodes, kills
every process left in the namespaces, deletes the veth (its qdiscs with it) and the
namespaces, and removes the quota group; :func:`teardown` does the same for a testbed whose
maker died. :func:`leftovers` lists what remains of any testbed (a test's leak check).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Sequence

from dnnsplit.executor.pipeline import ExecutorError
from dnnsplit.predictor.errors import DnnsplitError

PREFIX = "dnnsplit-tb"
ADDRESSES = {"phone": "10.79.0.1", "server": "10.79.0.2"}
INTERFACES = {"phone": "tbphone0", "server": "tbserver0"}
RAY_PORT = 6390
#: Every command of the testbed runs with this environment: Ray's token authentication off
#: (Ray >= 2.59 turns it on for a head started where a token file exists, and a node joining
#: without the token is refused); the cluster lives on a veth of its own.
ENV = {"RAY_AUTH_MODE": "disabled"}
START_TIMEOUT_S = 90.0


def _sh(*cmd: str, check: bool = True, timeout: float = 60.0) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and done.returncode != 0:
        raise ExecutorError(f"testbed: `{' '.join(cmd)}` failed: "
                            f"{(done.stderr or done.stdout).strip()[-400:]}")
    return done


def namespace(host: str, prefix: str = PREFIX) -> str:
    return f"{prefix}-{host}"


def requirements() -> str | None:
    """Why a testbed cannot be made here, or None."""
    if sys.platform != "linux":
        return "the testbed needs Linux network namespaces"
    if os.geteuid() != 0:
        return "the testbed needs root (ip netns, tc, cgroups)"
    missing = [tool for tool in ("ip", "tc", "taskset") if shutil.which(tool) is None]
    if missing:
        return f"the testbed needs {', '.join(missing)} (iproute2, util-linux)"
    if shutil.which("ray") is None and not _ray_cli():
        return "the testbed needs Ray: pip install 'dnnsplit[distributed]'"
    return None


def _ray_cli() -> list[str]:
    ray = shutil.which("ray") or os.path.join(os.path.dirname(sys.executable), "ray")
    return [ray] if os.path.exists(ray) else []


class Testbed:
    """See the module docstring."""

    __test__ = False  # not a test class, whatever pytest's name rule says

    def __init__(self, mbps: float, phone_fraction: float | None = 0.25, phone_cpu: int = 0,
                 server_cpu: int = 1, prefix: str = PREFIX, ray: bool = True):
        if not mbps > 0:
            raise ExecutorError(f"the testbed's link needs a bandwidth above 0, got {mbps!r}")
        self.mbps, self.phone_fraction = float(mbps), phone_fraction
        self.cpus = {"phone": phone_cpu, "server": server_cpu}
        self.prefix, self.ray = prefix, ray
        self.quota = None
        self._previous_handler = None

    @property
    def address(self) -> str:
        """The Ray cluster's address (the head in the phone's namespace)."""
        return f"{ADDRESSES['phone']}:{RAY_PORT}"

    def __enter__(self) -> "Testbed":
        self.up()
        return self

    def __exit__(self, *exc) -> None:
        self.down()

    def up(self) -> None:
        why = requirements()
        if why:
            raise ExecutorError(why)
        teardown(self.prefix)  # what an earlier, killed testbed left
        # Ctrl-C or a TERM: tear down like an exception would (the with block's __exit__)
        self._previous_handler = signal.signal(signal.SIGTERM, _raise_interrupt)
        try:
            self._network()
            if self.ray:
                self._ray_nodes()
        except BaseException:
            self.down()
            raise

    def _network(self) -> None:
        phone, server = namespace("phone", self.prefix), namespace("server", self.prefix)
        for ns in (phone, server):
            _sh("ip", "netns", "add", ns)
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        _sh("ip", "link", "add", INTERFACES["phone"], "netns", phone, "type", "veth", "peer",
            "name", INTERFACES["server"], "netns", server)
        for host in ("phone", "server"):
            ns, dev = namespace(host, self.prefix), INTERFACES[host]
            _sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{ADDRESSES[host]}/24", "dev",
                dev)
            _sh("ip", "netns", "exec", ns, "ip", "link", "set", dev, "up")
            # a bucket small next to a frame, yet holding a full-size packet
            _sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                "rate", f"{self.mbps:g}mbit", "burst", "4500", "latency", "800ms")

    def _ray_nodes(self) -> None:
        ray = _ray_cli()
        common = ["--num-cpus", "1", "--num-gpus", "0", "--disable-usage-stats"]
        self.run_on("phone", [*ray, "start", "--head", "--node-ip-address", ADDRESSES["phone"],
                              "--port", str(RAY_PORT), "--resources", json.dumps({"phone": 1}),
                              "--include-dashboard", "false", *common], check=True,
                    timeout=START_TIMEOUT_S)
        if self.phone_fraction is not None:
            from dnnsplit.collectors.throttle import CpuQuota

            self.quota = CpuQuota(self.phone_fraction, name=f"{self.prefix}-phone")
            self.quota.open()
            for pid in namespace_pids(namespace("phone", self.prefix)):
                try:
                    self.quota.add(pid)
                except DnnsplitError:  # a process that ended meanwhile
                    pass
        self.run_on("server", [*ray, "start", "--address", self.address, "--node-ip-address",
                               ADDRESSES["server"], "--resources", json.dumps({"server": 1}),
                               *common], check=True, timeout=START_TIMEOUT_S)
        self._wait_for_nodes(2)

    def _wait_for_nodes(self, n: int) -> None:
        script = ("import ray, sys; ray.init(address=sys.argv[1], logging_level='ERROR'); "
                  "print(sum(1 for x in ray.nodes() if x['Alive']))")
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            done = self.run_on("phone", [sys.executable, "-c", script, self.address],
                               timeout=START_TIMEOUT_S)
            if done.returncode == 0 and done.stdout.strip().splitlines()[-1:] == [str(n)]:
                return
            time.sleep(1.0)
        raise ExecutorError(f"the testbed's {n} Ray nodes did not come up within "
                            f"{START_TIMEOUT_S:g} s")

    def _inside(self, host: str, command: Sequence[str]) -> list[str]:
        """``command`` in ``host``'s namespace, pinned to its CPU, with the CPU quota groups
        in sight (``ip netns exec`` mounts a sysfs of the namespace's own, without the cgroup
        hierarchies: they are mounted again in the command's private mount namespace)."""
        return ["ip", "netns", "exec", namespace(host, self.prefix), "sh", "-c",
                f'{cgroup_remount()}exec "$@"', "sh", "taskset", "-c", str(self.cpus[host]),
                *command]

    def run_on(self, host: str, command: Sequence[str], check: bool = False,
               timeout: float | None = None, env: dict | None = None
               ) -> subprocess.CompletedProcess:
        """Run ``command`` in ``host``'s namespace, pinned to its CPU; output captured."""
        cmd = self._inside(host, command)
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **ENV, **(env or {})})
        if check and done.returncode != 0:
            raise ExecutorError(f"testbed: `{' '.join(command)}` on the {host} failed: "
                                f"{(done.stderr or done.stdout).strip()[-600:]}")
        return done

    def popen_on(self, host: str, command: Sequence[str], **kwargs) -> subprocess.Popen:
        """Start ``command`` in ``host``'s namespace, pinned to its CPU."""
        kwargs["env"] = {**os.environ, **ENV, **(kwargs.get("env") or {})}
        return subprocess.Popen(self._inside(host, command), **kwargs)

    def stop_node(self, host: str) -> None:
        """Kill every process of ``host``'s Ray node at once (a host that fails)."""
        for pid in namespace_pids(namespace(host, self.prefix)):
            _kill(pid)

    def down(self) -> None:
        teardown(self.prefix)
        if self.quota is not None:
            self.quota.close()
            self.quota = None
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None


def cgroup_remount() -> str:
    """Shell commands (each ending in ``; ``) that mount this machine's CPU controller
    hierarchy again at its place, for a process in a mount namespace of its own whose /sys has
    lost it; empty where there is none (then quotas are not available inside)."""
    from dnnsplit.collectors.throttle import ThrottleError, cgroup_root

    try:
        version, base = cgroup_root()
    except ThrottleError:
        return ""
    with open("/proc/mounts") as mounts:
        entry = next((line.split() for line in mounts if line.split()[1:2] == [str(base)]),
                     None)
    if entry is None:
        return ""
    if version == "v2":
        return f"[ -e {base}/cgroup.controllers ] || mount -t cgroup2 none {base} 2>/dev/null; "
    controllers = ",".join(o for o in entry[3].split(",") if o not in ("rw", "ro", "relatime",
                                                                       "nosuid", "nodev",
                                                                       "noexec"))
    parent = base.parent
    return (f"[ -e {base}/cpu.cfs_quota_us ] || {{ mount -t tmpfs none {parent} 2>/dev/null && "
            f"mkdir -p {base} && mount -t cgroup -o {controllers} cgroup {base} 2>/dev/null; }}; ")


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def namespace_pids(ns: str) -> list[int]:
    """The processes living in network namespace ``ns``."""
    done = _sh("ip", "netns", "pids", ns, check=False)
    return [int(p) for p in done.stdout.split()] if done.returncode == 0 else []


def _kill(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def teardown(prefix: str = PREFIX) -> None:
    """Remove every trace of a testbed: its processes, veth (and qdiscs), namespaces, quota
    groups (also one whose maker was killed)."""
    for host in ("phone", "server"):
        ns = namespace(host, prefix)
        if ns not in namespaces():
            continue
        ray = _ray_cli()
        if ray:
            subprocess.run(["ip", "netns", "exec", ns, *ray, "stop", "--force"],
                           capture_output=True, timeout=60, env={**os.environ, **ENV})
        for _ in range(3):
            pids = namespace_pids(ns)
            if not pids:
                break
            for pid in pids:
                _kill(pid)
            time.sleep(0.3)
        _sh("ip", "netns", "del", ns, check=False)
    from dnnsplit.collectors.throttle import remove_stale

    remove_stale()


def namespaces() -> list[str]:
    done = _sh("ip", "netns", "list", check=False)
    return [line.split()[0] for line in done.stdout.splitlines() if line.strip()]


def leftovers(prefix: str = PREFIX) -> list[str]:
    """What remains of any testbed: namespaces, interfaces, quota groups."""
    from dnnsplit.collectors.throttle import groups

    found = [f"netns {ns}" for ns in namespaces() if ns.startswith(prefix)]
    links = _sh("ip", "-o", "link", "show", check=False).stdout
    found += [f"link {name}" for name in INTERFACES.values() if f" {name}@" in links
              or f" {name}:" in links]
    found += [f"cgroup {g}" for g in groups() if g.startswith(prefix)]
    return found
