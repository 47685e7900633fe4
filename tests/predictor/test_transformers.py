"""The layers transformers use: counted, benchmarked, predicted, planned and run."""

import numpy as np
import pytest

from dnnsplit.collectors.kernels import KernelConfig
from dnnsplit.predictor.model_graph import TaskGraph

pytestmark = pytest.mark.usefixtures("fresh_keras_session")

NEW_TYPES = {"MultiHeadAttention", "EinsumDense", "Embedding", "GlobalAveragePooling1D",
             "LayerNormalization", "Conv1D", "Dense"}


def small_transformer():
    """Every new layer type in one small model: token ids, an embedding, a 1-D convolution over
    the sequence, attention, a GELU feed-forward, an EinsumDense, mean pooling."""
    import keras

    ids = keras.Input((16,), dtype="int32", name="ids")
    x = keras.layers.Embedding(50, 32, name="embed")(ids)
    x = keras.layers.Conv1D(32, 3, padding="same", name="conv1d")(x)
    h = keras.layers.LayerNormalization(name="ln1")(x)
    h = keras.layers.MultiHeadAttention(2, 16, name="attention")(h, h)
    x = keras.layers.Add(name="res1")([x, h])
    h = keras.layers.LayerNormalization(name="ln2")(x)
    h = keras.layers.Dense(64, activation="gelu", name="ffn")(h)
    h = keras.layers.EinsumDense("abc,cd->abd", output_shape=(16, 32), bias_axes="d",
                                 name="project")(h)
    x = keras.layers.Add(name="res2")([x, h])
    x = keras.layers.GlobalAveragePooling1D(name="pool")(x)
    return keras.Model(ids, keras.layers.Dense(3, name="head")(x), name="small_transformer")


def test_flops_of_attention_and_einsum_by_hand():
    tg = TaskGraph.from_keras(small_transformer())
    spec = tg.spec("attention")
    # projections of query, key, value (16 tokens x 32 features -> 2 heads x 16), scores and
    # weighted sum (2 heads x 16 x 16 x 16 each), softmax (3 per score), output projection
    projections = 3 * 2 * 16 * 32 * 2 * 16
    attention = 2 * 2 * 16 * 16 * (16 + 16) + 3 * 2 * 16 * 16
    output = 2 * 16 * 2 * 16 * 32
    assert spec.flops == projections + attention + output and spec.modelled
    record = spec.to_record()
    assert (record["groups"], record["units"]) == (2, 16)  # heads, key size
    einsum = tg.spec("project")
    assert einsum.flops == 2 * 16 * 32 * 64 + 16 * 32  # contraction over 64, plus the bias
    assert tg.spec("embed").flops == 0 and tg.spec("embed").modelled  # a gather: bytes
    assert tg.spec("conv1d").flops == 2 * 16 * 32 * 3 * 32 + 16 * 32
    assert not tg.unmodelled


@pytest.mark.parametrize("layers, shapes", [
    ([("MultiHeadAttention", {"num_heads": 2, "key_dim": 16})], [(1, 16, 32), (1, 16, 32)]),
    ([("Embedding", {"input_dim": 50, "output_dim": 32})], [(1, 16)]),
    ([("EinsumDense", {"equation": "abc,cd->abd", "output_shape": (16, 32),
                       "bias_axes": "d"})], [(1, 16, 64)]),
    ([("Conv1D", {"filters": 8, "kernel_size": (3,)}), ("Activation", {"activation": "gelu"})],
     [(1, 20, 4)]),
    ([("GlobalAveragePooling1D", {})], [(1, 20, 8)]),
])
def test_each_new_kernel_builds_alone_with_the_record_of_the_model_layer(layers, shapes):
    from dnnsplit.collectors.timing import model_inputs

    config = KernelConfig.of(layers, shapes)
    model = config.build()
    assert config.record(model)["layer_type"] == layers[0][0]
    again = KernelConfig.from_json(config.to_json())
    assert again.key == config.key
    inputs = [np.asarray(t) for t in model_inputs(model)]
    if layers[0][0] == "Embedding":  # token ids, all within the vocabulary
        assert inputs[0].dtype.kind == "i" and 0 <= inputs[0].min() and inputs[0].max() < 50
    model(inputs if len(inputs) > 1 else inputs[0])  # runs


def test_a_transformer_is_predicted_planned_and_run_on_the_shipped_profile():
    """Each new layer type through graph -> predict (its own kernel model, no fallback) ->
    plan (both objectives) -> execute (outputs equal the unsplit model)."""
    from dnnsplit.executor.run import execute
    from dnnsplit.partition.costs import DeviceSpec, parse_links, problem_from_graph
    from dnnsplit.partition.planner import make_plans
    from dnnsplit.predictor.bundle import load_bundle
    from dnnsplit.predictor.compose import predict_graph

    model = small_transformer()
    tg = TaskGraph.from_keras(model)
    bundle = load_bundle("cpu-1t-tensorflow")
    prediction = predict_graph(bundle, tg)
    types = {tg.graph.nodes[n]["layer_type"] for n in tg.nodes}
    assert NEW_TYPES <= types and not prediction.unmodelled
    assert NEW_TYPES <= set(bundle.types)  # every type has its own model
    devices = [DeviceSpec.parse("a=cpu-1t-tensorflow"), DeviceSpec.parse("b=cpu-1t-tensorflow")]
    problem = problem_from_graph(tg, devices, parse_links(["a", "b"], [], 10_000.0, 0.0))
    used = set()
    for objective in ("latency", "throughput"):
        plan = make_plans(problem, objective, ["dp"])[0]
        used |= {objective} if len(set(plan.assignment.values())) > 1 else set()
        report = execute(model, plan, frames=4, check_frames=4)
        assert report.outputs_match
    assert "throughput" in used  # the pipeline really splits the transformer


def test_an_embedding_streams_the_rows_it_looks_up_not_its_table():
    from dnnsplit.predictor.compose import kernel_weight_bytes
    from dnnsplit.predictor.fusion import find_kernels

    tg = TaskGraph.from_keras(small_transformer())
    by_first = {k.nodes[0]: k for k in find_kernels(tg)}
    embed = tg.spec("embed")
    assert embed.params == 50 * 32
    assert kernel_weight_bytes(tg, by_first["embed"]) == embed.output_bytes == 16 * 32 * 4
    assert kernel_weight_bytes(tg, by_first["ffn"]) >= 4 * tg.spec("ffn").params
