"""The coverage rule: a prediction says when it is an extrapolation of what was measured."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from dnnsplit.collectors.kernels import KernelConfig
from dnnsplit.predictor.cli import app
from dnnsplit.predictor.coverage import Coverage, fit_coverage

pytestmark = pytest.mark.usefixtures("fresh_keras_session")
runner = CliRunner()


def conv(cin, cout, hw, kernel=3, batch=1):
    config = KernelConfig.of([("Conv2D", {"filters": cout, "kernel_size": (kernel, kernel),
                                          "padding": "same"})], [(batch, hw, hw, cin)])
    return dict(config.record(), fused_pattern=config.pattern)


MEASURED = [conv(cin, cout, hw) for cin in (16, 32, 64) for cout in (16, 32, 64)
            for hw in (14, 28, 56)]


def test_a_measured_kernel_and_one_between_measured_ones_are_inside():
    coverage = fit_coverage(MEASURED + MEASURED)  # two loads of each kernel count once
    assert len(coverage.points) == len(MEASURED)
    assert coverage.inside([conv(32, 32, 28)]).tolist() == [True]
    assert coverage.inside([conv(24, 48, 28)]).tolist() == [True]  # between grid values


@pytest.mark.parametrize("outside, why", [
    (conv(1024, 512, 4, kernel=4), "channels and sizes beyond every measured kernel"),
    (conv(32, 32, 28, batch=8), "a batch size never measured"),
    (conv(32, 32, 28, kernel=7), "a kernel size never measured"),
])
def test_a_kernel_beyond_what_was_measured_is_outside(outside, why):
    coverage = fit_coverage(MEASURED)
    assert coverage.inside([outside]).tolist() == [False], why
    assert coverage.distance([outside])[0] > coverage.distance([conv(24, 48, 28)])[0]


def test_the_rule_survives_its_json_form():
    coverage = fit_coverage(MEASURED)
    again = Coverage.from_dict(json.loads(json.dumps(coverage.to_dict())))
    probes = [conv(24, 48, 28), conv(1024, 512, 4, kernel=4), conv(16, 64, 56)]
    assert again.inside(probes).tolist() == coverage.inside(probes).tolist() == \
        [True, False, True]
    np.testing.assert_allclose(again.distance(probes), coverage.distance(probes), atol=0.01)


def inside_model():
    """Only kernels like the synthetic profile's narrow grids (Conv2D and Add, 8-32 channels,
    7-28 pixels)."""
    import keras

    x = keras.Input((14, 14, 8), name="x")
    a = keras.layers.Conv2D(16, 3, padding="same", name="c1")(x)
    a = keras.layers.BatchNormalization(name="bn")(a)
    a = keras.layers.Activation("relu", name="act")(a)
    b = keras.layers.Conv2D(16, 1, name="c2")(x)
    return keras.Model(x, keras.layers.Add(name="add")([a, b]), name="inside")


def unet_like():
    """A small U-Net generator: wider convolutions than the grid and transposed ones, which the
    synthetic profile never measured."""
    import keras

    x = keras.Input((32, 32, 3), name="x")
    d1 = keras.layers.Conv2D(64, 4, strides=2, padding="same", name="down1")(x)
    d2 = keras.layers.Conv2D(128, 4, strides=2, padding="same", name="down2")(d1)
    u1 = keras.layers.Conv2DTranspose(64, 4, strides=2, padding="same", name="up1")(d2)
    u1 = keras.layers.Concatenate(name="skip")([u1, d1])
    y = keras.layers.Conv2DTranspose(3, 4, strides=2, padding="same", name="up2")(u1)
    return keras.Model(x, y, name="unet_like")


@pytest.fixture(scope="module")
def narrow_profile(tmp_path_factory):
    from synthetic_profile import make_profile

    folder = make_profile(tmp_path_factory.mktemp("narrow") / "narrow-cpu")
    assert runner.invoke(app, ["train", "--data", str(folder), "--quiet"]).exit_code == 0
    return folder


def test_the_warning_fires_on_a_unet_and_stays_silent_inside_the_grid(narrow_profile, tmp_path):
    for model, expect_warning in ((unet_like(), True), (inside_model(), False)):
        path = tmp_path / f"{model.name}.keras"
        model.save(path)
        result = runner.invoke(app, ["predict", str(path), "--device", str(narrow_profile),
                                     "--json"])
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)
        flags = {layer["name"]: layer["inside_measured"] for layer in out["layers"]}
        warning = out["outside_measured"]["warning"]
        if expect_warning:
            assert flags["up1"] is False and flags["down2"] is False
            assert out["outside_measured"]["share_of_time"] > 0.5
            assert warning.startswith(f"{out['outside_measured']['share_of_time']:.0%} of the "
                                      "predicted time on narrow-cpu comes from")
            assert "outside the measured range (" in warning and "rough guess" in warning
            table = runner.invoke(app, ["predict", str(path), "--device", str(narrow_profile)])
            assert "OUTSIDE" in table.stdout
            assert table.stdout.strip().splitlines()[-1] == f"warning: {warning}"
        else:
            assert all(flags.values()) and warning == ""


def test_a_plan_carries_the_warning_in_its_note_and_table(narrow_profile, tmp_path):
    from dnnsplit.partition.cli import app as partition_app

    path = tmp_path / "unet.keras"
    unet_like().save(path)
    args = ["plan", str(path), "--device", f"a={narrow_profile}", "--device",
            f"b={narrow_profile}:x2", "--mbps", "100", "--rtt-ms", "1"]
    table = runner.invoke(partition_app, args)
    assert table.exit_code == 0, table.output
    assert "warning: " in table.stdout and "outside the measured range" in table.stdout
    plans = json.loads(runner.invoke(partition_app, args + ["--json"]).stdout)["plans"]
    assert all("outside the measured range" in plan["note"] for plan in plans)
