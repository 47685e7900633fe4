"""The Ray backend on a cluster of two nodes: joined by address, stages pinned by resource.

Both nodes run on this machine (``ray.cluster_utils.Cluster``), each with its own raylet and
object store, so frames really cross between object stores, as between machines.
"""

import numpy as np
import pytest

from dnnsplit.executor.pipeline import ExecutorError
from dnnsplit.executor.run import execute, random_frames
from tests.executor.test_pipeline import branchy_model, plan_for

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.usefixtures("fresh_keras_session")


@pytest.fixture(scope="module")
def two_nodes():
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "resources": {"edge_box": 1}})
    cluster.add_node(num_cpus=1, resources={"server_box": 1})
    cluster.wait_for_nodes()
    yield cluster
    if ray.is_initialized():
        ray.shutdown()
    cluster.shutdown()


def _node_with(resource: str) -> str:
    return next(n["NodeID"] for n in ray.nodes() if n["Alive"] and resource in n["Resources"])


def test_stages_run_on_the_nodes_they_are_pinned_to_and_outputs_match(two_nodes):
    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    report = execute(model, plan, frames=6, backend="ray", address=two_nodes.address,
                     placement={"a": "edge_box", "b": "server_box"}, check_frames=6)
    assert report.outputs_match and report.frames == 6
    ray.init(address=two_nodes.address)  # execute left the cluster; look at it again
    try:
        where = {row["device"]: row["ray_node"] for row in report.stages}
        assert where == {"a": _node_with("edge_box"), "b": _node_with("server_box")}
        assert where["a"] != where["b"]
    finally:
        ray.shutdown()
    frames = random_frames(model, 6)
    for arrays, outputs in zip(frames, report.run.outputs):
        np.testing.assert_allclose(np.asarray(model(arrays[0], training=False)[0]),
                                   outputs[0], rtol=1e-4, atol=1e-5)


def test_a_resource_no_node_offers_is_refused_with_its_name(two_nodes, monkeypatch):
    import dnnsplit.executor.ray_backend as backend

    monkeypatch.setattr(backend, "START_TIMEOUT_S", 3.0)
    model = branchy_model()
    plan = plan_for(model, devices=("a", "b"))
    with pytest.raises(ExecutorError, match="gpu_box"):
        execute(model, plan, frames=2, backend="ray", address=two_nodes.address,
                placement={"a": "edge_box", "b": "gpu_box"})
