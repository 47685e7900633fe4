"""Link profiles: upload and download times over real TCP, fitted as latency + bytes / bandwidth.

Server (on the peer): ``collectors link-server --port 5201``. Client: ``collectors link --peer
HOST:5201 --out wifi.json`` sends and receives payloads from bytes to tens of MB and fits, per
direction, ``time_ms = latency_ms + bytes * 8 / (mbps * 1000)`` — the model the partitioner
uses. ``collectors link --mbps 20 --rtt-ms 5 --out what-if.json`` writes a synthetic profile.

Wire protocol (one TCP connection per transfer): the client sends ``op`` (1 byte: ``U``pload or
``D``ownload) and the size (8 bytes, big endian). Upload: the client sends the payload, the
server answers one byte once all of it arrived. Download: the server sends the payload. The
client's clock covers request to last byte, so each time includes one round trip, which the
fit puts into the latency.

The profile JSON is ``{"up": {"latency_ms", "mbps"}, "down": {...}, "synthetic", "peer",
"measured": [[direction, bytes, ms], ...], "date"}``: ``partition plan --link A-B=FILE`` reads
it (up = A -> B).
"""

from __future__ import annotations

import datetime
import socket
import socketserver
import statistics
import struct
import threading
import time
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from dnnsplit.predictor.errors import DnnsplitError

HEADER = struct.Struct("!cQ")
CHUNK = 1 << 20
#: Payload sizes measured by default: 1 B to 32 MB, about 3 per decade.
DEFAULT_SIZES = tuple(int(s) for s in np.unique(np.round(np.logspace(0, np.log10(32 << 20), 24))))
MAX_PAYLOAD = 1 << 31


class LinkError(DnnsplitError):
    """A link cannot be measured or a profile is invalid."""


def _recv_exact(sock: socket.socket, size: int) -> None:
    remaining = size
    while remaining:
        chunk = sock.recv(min(CHUNK, remaining))
        if not chunk:
            raise ConnectionError("peer closed the connection mid-transfer")
        remaining -= len(chunk)


def _send_zeros(sock: socket.socket, size: int) -> None:
    block = bytes(min(CHUNK, max(size, 1)))
    remaining = size
    while remaining:
        n = min(len(block), remaining)
        sock.sendall(block[:n])
        remaining -= n


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        sock = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        header = b""
        while len(header) < HEADER.size:
            chunk = sock.recv(HEADER.size - len(header))
            if not chunk:
                return
            header += chunk
        op, size = HEADER.unpack(header)
        if size > MAX_PAYLOAD:
            return
        if op == b"U":
            _recv_exact(sock, size)
            sock.sendall(b"K")
        elif op == b"D":
            _send_zeros(sock, size)


class LinkServer(socketserver.ThreadingTCPServer):
    """``with LinkServer(("0.0.0.0", 5201)) as server: server.serve_forever()``"""

    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int]):
        super().__init__(address, _Handler)

    def start_in_thread(self) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, daemon=True)
        thread.start()
        return thread


def parse_peer(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise LinkError(f"peer {text!r} is not HOST:PORT")
    return host, int(port)


def transfer_ms(peer: tuple[str, int], op: str, size: int, timeout_s: float = 60.0) -> float:
    """Time (ms) of one upload (``U``) or download (``D``) of ``size`` bytes."""
    try:
        with socket.create_connection(peer, timeout=timeout_s) as sock:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            start = time.perf_counter()
            sock.sendall(HEADER.pack(op.encode(), size))
            if op == "U":
                _send_zeros(sock, size)
                _recv_exact(sock, 1)
            else:
                _recv_exact(sock, size)
            return (time.perf_counter() - start) * 1000
    except OSError as exc:
        raise LinkError(f"cannot reach link server {peer[0]}:{peer[1]}: {exc} (is "
                        "`collectors link-server` running there?)") from None


@dataclass(frozen=True)
class Direction:
    latency_ms: float
    mbps: float

    def as_dict(self) -> dict:
        return {"latency_ms": self.latency_ms, "mbps": self.mbps}


def fit_direction(sizes: Sequence[int], times_ms: Sequence[float]) -> Direction:
    """Least-squares fit of time = latency + bytes * 8 / (mbps * 1000), latency >= 0."""
    x = np.asarray(sizes, dtype=float) * 8 / 1000  # kilobits -> ms at 1 Mbps
    y = np.asarray(times_ms, dtype=float)
    weights = 1 / np.maximum(y, 1e-3)  # relative errors: small and large sizes count alike
    design = np.stack([np.ones_like(x), x], axis=1) * weights[:, None]
    (latency, per_kbit), *_ = np.linalg.lstsq(design, y * weights, rcond=None)
    if per_kbit <= 0:
        raise LinkError("transfer time does not grow with size: measure larger payloads")
    return Direction(latency_ms=max(float(latency), 0.0), mbps=float(1 / per_kbit))


def measure_link(peer: tuple[str, int], sizes: Sequence[int] = DEFAULT_SIZES,
                 repeats: int = 3, budget_s: float = 120.0) -> dict:
    """Measure both directions against a running link server and fit a profile."""
    measured = []
    deadline = time.monotonic() + budget_s
    for size in sizes:
        for op, direction in (("U", "up"), ("D", "down")):
            times = [transfer_ms(peer, op, size) for _ in range(repeats)]
            measured.append([direction, int(size), statistics.median(times)])
        if time.monotonic() > deadline:
            break
    profile = {"peer": f"{peer[0]}:{peer[1]}", "synthetic": False, "measured": measured,
               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    for direction in ("up", "down"):
        rows = [(b, t) for d, b, t in measured if d == direction]
        profile[direction] = fit_direction([b for b, _ in rows], [t for _, t in rows]).as_dict()
    return profile


def synthetic_link(mbps: float, rtt_ms: float = 0.0) -> dict:
    """A what-if profile: the same bandwidth both ways, one-way latency rtt / 2."""
    if not mbps > 0:
        raise LinkError(f"bandwidth must be > 0 Mbps, got {mbps}")
    if rtt_ms < 0:
        raise LinkError(f"round-trip time must be >= 0 ms, got {rtt_ms}")
    direction = Direction(latency_ms=rtt_ms / 2, mbps=mbps).as_dict()
    return {"up": direction, "down": dict(direction), "synthetic": True,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
