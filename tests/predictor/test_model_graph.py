"""TaskGraph: one node per operation call and exactly the Keras graph's edges, on every model."""

import keras
import networkx as nx
import pytest

from dnnsplit.predictor.model_graph import TaskGraph
from dnnsplit.predictor.errors import ModelLoadError, SpecError
from dnnsplit.predictor.model_source import application_names, load_model, zoo_names

pytestmark = pytest.mark.usefixtures("fresh_keras_session")


def config_graph(model):
    """Reference nodes and edges read from model.get_config(), independent of the graph walker.

    Nested Sequential models (ConvNeXt's stem and downsampling blocks) are flattened here by
    hand: their layers form a chain named ``outer/inner``.
    """
    nodes, edges, alias = set(), set(), {}

    def histories(obj):
        if isinstance(obj, dict):
            if obj.get("class_name") == "__keras_tensor__":
                yield obj["config"]["keras_history"][0]
            else:
                for v in obj.values():
                    yield from histories(v)
        elif isinstance(obj, (list, tuple)):
            for v in obj:
                yield from histories(v)

    for layer in model.get_config()["layers"]:
        name = layer["name"]
        sources = [alias.get(s, s) for s in histories(layer.get("inbound_nodes", []))]
        if layer["class_name"] == "Sequential":
            chain = [
                f"{name}/{inner['config']['name']}"
                for inner in layer["config"]["layers"]
                if inner["class_name"] != "InputLayer"
            ]
            nodes.update(chain)
            edges.update((s, chain[0]) for s in sources)
            edges.update(zip(chain, chain[1:]))
            alias[name] = chain[-1]
        else:
            assert layer["class_name"] != "Functional", "nested functional: extend the reference"
            nodes.add(name)
            edges.update((s, name) for s in sources)
    return nodes, edges


APPLICATIONS = application_names()
#: One small model per kind of block (residual, dense, inception, depthwise with squeeze-excite,
#: NAS cells, ConvNeXt's bare keras.ops) in the default run; the others repeat those blocks and
#: are slow extras (pytest -m slow).
DEFAULT_RUN = {"ConvNeXtTiny", "DenseNet121", "EfficientNetB0", "InceptionV3", "MobileNetV2",
               "MobileNetV3Small", "NASNetMobile", "ResNet50"}


def test_about_forty_applications_are_found():
    assert 38 <= len(APPLICATIONS) <= 60
    assert {"ResNet50", "MobileNetV2", "NASNetMobile", "ConvNeXtTiny"} <= set(APPLICATIONS)


@pytest.mark.parametrize("name", [
    n if n in DEFAULT_RUN else pytest.param(n, marks=pytest.mark.slow) for n in APPLICATIONS])
def test_application_graph_matches_keras_config(name):
    model = load_model(name)
    tg = TaskGraph.from_keras(model)
    ref_nodes, ref_edges = config_graph(model)
    assert set(tg.graph.nodes) == ref_nodes
    assert set(tg.graph.edges) == ref_edges
    assert nx.is_directed_acyclic_graph(tg.graph)
    assert tg.params == model.count_params()
    assert tg.flops == sum(tg.spec(n).flops for n in tg.nodes)
    assert list(tg.input_nodes) == [model.inputs[0]._keras_history[0].name]
    assert len(tg.output_nodes) == 1 and tg.graph.out_degree(tg.output_nodes[0]) == 0
    order = {n: i for i, n in enumerate(tg.nodes)}
    assert all(order[u] < order[v] for u, v in tg.graph.edges)
    for u, v, data in tg.graph.edges(data=True):
        assert data["bytes"] == tg.graph.nodes[u]["output_bytes"]  # single-output layers
    assert tg.flops > 0


@pytest.mark.parametrize("name", zoo_names())
def test_every_zoo_model_has_a_modelled_graph_matching_keras(name):
    """The project's own models (training and held-out) build by name, every layer has a
    FLOPs rule, and the graph is the one Keras records."""
    model = load_model(name)
    tg = TaskGraph.from_keras(model)
    ref_nodes, ref_edges = config_graph(model)
    assert set(tg.graph.nodes) == ref_nodes and set(tg.graph.edges) == ref_edges
    assert tg.unmodelled == [] and tg.params == model.count_params() and tg.flops > 0
    assert len(tg.input_nodes) == len(model.inputs)


def test_convnext_residual_adds_are_nodes():
    model = load_model("convnexttiny")
    tg = TaskGraph.from_keras(model)
    op_nodes = [n for n, d in tg.graph.nodes(data=True) if d["layer_type"] == "ops.Add"]
    assert len(op_nodes) == 18  # 3 + 3 + 9 + 3 blocks
    assert all(n not in {layer.name for layer in model.layers} for n in op_nodes)
    assert all(tg.graph.in_degree(n) == 2 for n in op_nodes)


def build_nested_shared_model():
    inner = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(4, name="d"), keras.layers.ReLU(name="r")],
        name="inner",
    )
    x = keras.Input((8,), name="x")
    shared = keras.layers.Dense(8, name="shared")
    a = shared(x)
    b = shared(a)
    y1 = inner(b)
    y2 = inner(a)
    z = keras.ops.add(y1, y1)
    return keras.Model(x, [y2, z], name="nested")


def test_nested_models_are_flattened_and_shared_layers_give_one_node_per_call():
    tg = TaskGraph.from_keras(build_nested_shared_model())
    expected_edges = {
        ("x", "shared"),
        ("shared", "shared@1"),
        ("shared@1", "inner/d"),
        ("inner/d", "inner/r"),
        ("shared", "inner@1/d"),
        ("inner@1/d", "inner@1/r"),
        ("inner/r", "add"),
    }
    assert set(tg.graph.edges) == expected_edges
    assert len(tg) == 8
    assert tg.input_nodes == ("x",)
    assert tg.output_nodes == ("inner@1/r", "add")
    assert tg.graph.nodes["inner@1/d"]["path"] == ("inner@1", "d")
    assert tg.graph.nodes["shared@1"]["call"] == 1
    assert tg.graph.edges["inner/r", "add"]["bytes"] == 4 * 4  # the same tensor sent once
    assert tg.spec("inner/d").flops == 2 * 8 * 4 + 4


def test_multi_input_multi_output_model():
    a, b = keras.Input((6, 6, 3), name="a"), keras.Input((6, 6, 5), name="b")
    cat = keras.layers.Concatenate(name="cat")([a, b])
    conv = keras.layers.Conv2D(4, 1, name="conv")(cat)
    pool = keras.layers.GlobalAveragePooling2D(name="gap")(conv)
    tg = TaskGraph.from_keras(keras.Model([a, b], [conv, pool]))
    assert tg.input_nodes == ("a", "b")
    assert tg.output_nodes == ("conv", "gap")
    assert tg.graph.edges["a", "cat"]["bytes"] == 6 * 6 * 3 * 4
    assert tg.spec("cat").input_bytes == 6 * 6 * 8 * 4
    assert tg.summary()["largest_tensor"] == {"node": "cat", "bytes": 6 * 6 * 8 * 4}


def test_sequential_without_input_and_subclassed_models_are_refused():
    with pytest.raises(SpecError, match="keras.Input"):
        TaskGraph.from_keras(keras.Sequential([keras.layers.Dense(2)]))

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(SpecError, match="subclassed"):
        TaskGraph.from_keras(Sub())


def test_saved_model_file_round_trips(tmp_path):
    path = tmp_path / "m.keras"
    build_nested_shared_model().save(path)
    tg = TaskGraph.from_keras(load_model(path))
    assert len(tg) == 8


@pytest.mark.parametrize(
    "source, message",
    [
        ("no/such/model.keras", "does not exist"),
        ("resnet5", "Did you mean ResNet50"),
        ("definitely-not-a-model", "neither a model file"),
    ],
)
def test_bad_model_names_give_clear_errors(source, message):
    with pytest.raises(ModelLoadError, match=message):
        load_model(source)


def test_corrupt_and_wrong_type_files_give_clear_errors(tmp_path):
    corrupt = tmp_path / "broken.keras"
    corrupt.write_bytes(b"this is not a zip archive")
    with pytest.raises(ModelLoadError, match="is not a .keras model: a .keras file is a zip "
                                             "archive written by model.save") as info:
        load_model(corrupt)  # Keras itself says "File not found" of a file that exists
    assert "\n" not in str(info.value)
    not_hdf5 = tmp_path / "broken.h5"
    not_hdf5.write_bytes(b"plain text, not HDF5")
    with pytest.raises(ModelLoadError, match="is not an HDF5"):
        load_model(not_hdf5)
    import zipfile

    empty_zip = tmp_path / "empty.keras"
    zipfile.ZipFile(empty_zip, "w").close()  # a zip, but no model inside: Keras's own error
    with pytest.raises(ModelLoadError, match="cannot load model file"):
        load_model(empty_zip)
    text = tmp_path / "notes.txt"
    text.write_text("hi")
    with pytest.raises(ModelLoadError, match="not a Keras model file"):
        load_model(text)
    with pytest.raises(ModelLoadError, match="directory"):
        load_model(str(tmp_path) + "/")
