"""Real socket links: tensors cross TCP through an echo relay, arrive intact and in order, and a
relay that is missing or dies stops the run with an error naming the link."""

import os
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from dnnsplit.executor.pipeline import ExecutorError
from dnnsplit.executor.relay import Relay, SocketLink, parse_address
from dnnsplit.executor.run import execute, random_frames
from dnnsplit.executor.stages import build_stages
from dnnsplit.predictor.model_graph import TaskGraph
from dnnsplit.predictor.errors import DnnsplitError
from tests.executor.test_pipeline import branchy_model, nested_model, plan_for

pytestmark = pytest.mark.usefixtures("fresh_keras_session")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_socket_link_carries_frames_intact_and_in_order_even_when_large():
    layout = [(("big", 0), (1, 1024, 1024), "float32"), (("small", 1), (3,), "int32")]
    with Relay() as relay:
        link = SocketLink(relay.address, layout, "a->b")
        assert link.frame_bytes == 4 * 1024 * 1024 + 12
        frames = [{("big", 0): np.full((1, 1024, 1024), i, "float32"),
                   ("small", 1): np.array([i, i + 1, i + 2], "int32")} for i in range(4)]
        sender = threading.Thread(target=lambda: [link.send(f) for f in frames])
        sender.start()  # 16 MB in flight: more than the socket buffers hold
        got = [link.receive(lambda: True) for _ in frames]
        sender.join(timeout=30)
        link.close()
    for i, values in enumerate(got):
        assert values[("big", 0)].shape == (1, 1024, 1024) and (values[("big", 0)] == i).all()
        np.testing.assert_array_equal(values[("small", 1)], [i, i + 1, i + 2])


def test_receiving_stops_when_told_to():
    with Relay() as relay:
        link = SocketLink(relay.address, [(("x", 0), (4,), "float32")], "a->b")
        with pytest.raises(StopIteration):
            link.receive(lambda: False)
        link.close()


@pytest.mark.parametrize("build", [branchy_model, nested_model])
def test_outputs_through_real_sockets_equal_the_unsplit_model(build):
    model = build()
    plan = plan_for(model)  # three stages: a tensor skips a stage, outputs leave two stages
    report = execute(model, plan, frames=8, check_frames=8, relay="local")
    assert report.outputs_match
    frames = random_frames(model, 8)
    for arrays, outputs in zip(frames, report.run.outputs):
        reference = model(arrays[0], training=False)
        reference = reference if isinstance(reference, (list, tuple)) else [reference]
        for r, o in zip(reference, outputs):
            np.testing.assert_allclose(np.asarray(r), o, rtol=1e-4, atol=1e-5)
    links = [e for e in report.run.events if e.lane.endswith("->next")]
    assert {e.lane for e in links} == {f"{s['device']}->next" for s in report.stages[:-1]}
    assert all(e.end >= e.start for e in links)
    for lane in {e.lane for e in links}:  # every frame crossed every link, in order
        assert [e.frame for e in links if e.lane == lane] == list(range(8))
    tg = TaskGraph.from_keras(model)
    producer = {k: s.device for s in build_stages(model, plan, tg) for k in s.output_keys}
    off_first = [k for k in tg.output_sources if producer[k] != plan.problem.devices[0]]
    returns = [e.frame for e in report.run.events if e.lane == "return"]
    assert off_first and returns == list(range(8))  # outputs crossed their own link back


def test_a_missing_relay_is_a_clear_error():
    model = branchy_model()
    port = _free_port()
    with pytest.raises(ExecutorError, match=f"cannot reach the relay at 127.0.0.1:{port}.*"
                                            "executor relay"):
        execute(model, plan_for(model, devices=("a", "b")), frames=4,
                relay=f"127.0.0.1:{port}")


def test_a_relay_that_dies_stops_the_run_naming_the_link():
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo_a_little_then_die():
        conn, _ = server.accept()
        conn.sendall(conn.recv(64))
        time.sleep(0.2)
        conn.close()
        server.close()

    threading.Thread(target=echo_a_little_then_die, daemon=True).start()
    model = branchy_model()
    start = time.monotonic()
    with pytest.raises(ExecutorError, match="link a->b"):
        execute(model, plan_for(model, devices=("a", "b")), frames=100_000,
                relay=f"127.0.0.1:{port}")
    assert time.monotonic() - start < 30


def test_relay_is_refused_where_it_does_not_apply_and_addresses_are_checked(monkeypatch):
    model = branchy_model()
    with pytest.raises(DnnsplitError, match="--relay needs --backend local"):
        execute(model, plan_for(model, devices=("a", "b")), backend="processes",
                relay="local")
    assert parse_address("10.9.0.2:5301") == ("10.9.0.2", 5301)
    assert parse_address("relay.lan") == ("relay.lan", 5301)
    for bad in ("host:port", ":5301", "host:70000"):
        with pytest.raises(ExecutorError, match="HOST:PORT"):
            parse_address(bad)
    import dnnsplit.executor.run as run_module

    def no_stages(*args, **kwargs):
        raise AssertionError("stages were built before the relay address was checked")

    monkeypatch.setattr(run_module, "build_stages", no_stages)
    with pytest.raises(ExecutorError, match="HOST:PORT"):
        execute(model, plan_for(model, devices=("a", "b")), relay="10.9.0.2:port")


def test_the_relay_command_serves_a_run(tmp_path):
    port = _free_port()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    relay = subprocess.Popen([sys.executable, "-m", "dnnsplit.executor.cli", "relay", "--host",
                              "127.0.0.1", "--port", str(port)], env=env,
                             stderr=subprocess.PIPE, text=True)
    try:
        assert "relay listening" in relay.stderr.readline()
        model = branchy_model()
        report = execute(model, plan_for(model, devices=("a", "b")), frames=6,
                         relay=f"127.0.0.1:{port}")
        assert report.outputs_match and report.run.link_ms["a->next"] > 0
    finally:
        relay.terminate()
        relay.wait(timeout=10)


def test_a_relay_on_a_busy_port_is_a_clear_error():
    from dnnsplit.executor.relay import serve_relay

    with Relay() as relay:
        host, port = relay.address
        with pytest.raises(ExecutorError, match=f"cannot listen on {host}:{port}"):
            serve_relay(host, port)
