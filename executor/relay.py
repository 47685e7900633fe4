"""Real TCP links between pipeline stages: an echo relay and the two ends of a socket link.

By default the local backend emulates a link by arithmetic (latency + bytes / bandwidth).
With a relay (``executor run --relay HOST:PORT``) the tensors one stage hands to the next
really cross TCP: the sending end writes them to a connection to the relay, which echoes every
byte back to the receiving end in this process. Put the relay behind the network to try (on
another machine, or in a network namespace behind a shaped veth, ``tc qdisc add dev veth0 root
tbf rate 10mbit burst 32kbit latency 400ms``) and the link time measured is what that network
does to the frames, there and back. ``--relay local`` starts one on loopback in this process:
real sockets, no shaping.

>>> with Relay() as relay:                                         # doctest: +SKIP
...     link = SocketLink(relay.address, [(("x", 0), (2, 3), "float32")], "w1->w2")
...     link.send({("x", 0): np.ones((2, 3), "float32")})
...     link.receive(lambda: True)[("x", 0)].sum()
6.0
"""

from __future__ import annotations

import select
import socket
import socketserver
import threading
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from dnnsplit.executor.pipeline import ExecutorError
from dnnsplit.executor.stages import Key

__all__ = ["Relay", "SocketLink", "parse_address", "serve_relay"]

POLL_S = 0.1
CHUNK = 1 << 20


class _Echo(socketserver.BaseRequestHandler):
    def handle(self):
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while True:
            data = self.request.recv(CHUNK)
            if not data:
                return
            self.request.sendall(data)


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


class Relay:
    """An echo server on ``host:port`` (port 0: any free one), served by a thread while the
    ``with`` block runs; ``address`` is where it listens."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0):
        self._server = _Server((host, port), _Echo)
        self.address: tuple[str, int] = self._server.server_address[:2]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="dnnsplit-relay", daemon=True)

    def __enter__(self) -> "Relay":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def serve_relay(host: str = "0.0.0.0", port: int = 5301,
                listening: Callable[[], None] | None = None) -> None:
    """Echo every connection's bytes back until interrupted (``executor relay``);
    ``listening()`` is called once the port is bound."""
    try:
        server = _Server((host, port), _Echo)
    except OSError as exc:
        raise ExecutorError(f"the relay cannot listen on {host}:{port}: {exc}") from None
    with server:
        if listening is not None:
            listening()
        server.serve_forever()


def parse_address(text: str, default_port: int = 5301) -> tuple[str, int]:
    """``HOST:PORT`` (or ``HOST``) as a socket address."""
    host, _, port = text.rpartition(":") if ":" in text else (text, "", str(default_port))
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ExecutorError(f"relay address {text!r} is not HOST:PORT, e.g. 10.9.0.2:5301")
    return host, int(port)


class SocketLink:
    """One link: ``send`` writes a frame's tensors to the relay, ``receive`` reads them back.

    ``layout`` lists ``(key, shape, dtype)`` of what one frame carries (fixed by the model),
    so only raw bytes travel; TCP keeps frames in order. Sending and receiving run on two
    threads, so a frame is read back while the next one is written (a relay echoing a large
    frame would otherwise fill both socket buffers and stall).
    """

    def __init__(self, address: tuple[str, int], layout: Sequence[tuple[Key, tuple, str]],
                 name: str, connect_timeout_s: float = 10.0):
        self.layout = [(key, tuple(shape), np.dtype(dtype)) for key, shape, dtype in layout]
        self.name = name
        try:
            self.sock = socket.create_connection(address, timeout=connect_timeout_s)
        except OSError as exc:
            raise ExecutorError(
                f"link {name}: cannot reach the relay at {address[0]}:{address[1]} ({exc}); "
                "start one there with `executor relay --port PORT`") from None
        self.sock.settimeout(None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.closed = False

    @property
    def frame_bytes(self) -> int:
        return sum(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                   for _, shape, dtype in self.layout)

    def send(self, values: Mapping[Key, Any]) -> None:
        try:
            for key, shape, dtype in self.layout:
                array = np.ascontiguousarray(values[key], dtype=dtype)
                self.sock.sendall(memoryview(array).cast("B"))
        except OSError as exc:
            raise self._lost(exc) from None

    def receive(self, going: Callable[[], bool]) -> dict[Key, np.ndarray]:
        """The next frame's tensors; waits while ``going()`` (else raises ``StopIteration``)."""
        values = {}
        for key, shape, dtype in self.layout:
            buffer = bytearray(int(np.prod(shape, dtype=np.int64)) * dtype.itemsize)
            view, got = memoryview(buffer), 0
            while got < len(buffer):
                if not going():
                    raise StopIteration
                ready, _, _ = select.select([self.sock], [], [], POLL_S)
                if not ready:
                    continue
                try:
                    n = self.sock.recv_into(view[got:], min(CHUNK, len(buffer) - got))
                except OSError as exc:
                    raise self._lost(exc) from None
                if n == 0:
                    raise self._lost(ConnectionError("the relay closed the connection"))
                got += n
            values[key] = np.frombuffer(buffer, dtype=dtype).reshape(shape)
        return values

    def _lost(self, exc: BaseException) -> ExecutorError:
        if self.closed:
            return ExecutorError(f"link {self.name} closed")
        return ExecutorError(f"link {self.name}: the connection to the relay failed: "
                             f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Unblock both ends (a send stuck on a full buffer fails) and close the socket."""
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
