"""Common models that are not in keras.applications, built by name like them.

- ``AlexNet`` (Krizhevsky et al. 2012, single-tower variant, 227x227x3, 1000 classes);
- ``SqueezeNet`` (v1.1, fire modules, 224x224x3);
- ``Pix2PixUNet`` (the pix2pix U-Net generator, 256x256x3 -> 256x256x3).
"""

from __future__ import annotations

from dnnsplit.predictor.keras_env import import_keras


def alexnet(input_shape=(227, 227, 3), classes=1000):
    layers = import_keras().layers
    x = inputs = layers.Input(input_shape)
    x = layers.Conv2D(96, 11, strides=4, activation="relu")(x)
    x = layers.MaxPooling2D(3, strides=2)(x)
    x = layers.Conv2D(256, 5, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(3, strides=2)(x)
    x = layers.Conv2D(384, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(384, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(3, strides=2)(x)
    x = layers.Flatten()(x)
    x = layers.Dense(4096, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Dense(4096, activation="relu")(x)
    x = layers.Dropout(0.5)(x)
    outputs = layers.Dense(classes, activation="softmax")(x)
    return import_keras().Model(inputs, outputs, name="alexnet")


def squeezenet(input_shape=(224, 224, 3), classes=1000):
    layers = import_keras().layers

    def fire(x, squeeze, expand):
        s = layers.Conv2D(squeeze, 1, activation="relu")(x)
        left = layers.Conv2D(expand, 1, activation="relu")(s)
        right = layers.Conv2D(expand, 3, padding="same", activation="relu")(s)
        return layers.Concatenate()([left, right])

    x = inputs = layers.Input(input_shape)
    x = layers.Conv2D(64, 3, strides=2, activation="relu")(x)
    x = layers.MaxPooling2D(3, strides=2)(x)
    x = fire(x, 16, 64)
    x = fire(x, 16, 64)
    x = layers.MaxPooling2D(3, strides=2)(x)
    x = fire(x, 32, 128)
    x = fire(x, 32, 128)
    x = layers.MaxPooling2D(3, strides=2)(x)
    for squeeze, expand in ((48, 192), (48, 192), (64, 256), (64, 256)):
        x = fire(x, squeeze, expand)
    x = layers.Dropout(0.5)(x)
    x = layers.Conv2D(classes, 1, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Activation("softmax")(x)
    return import_keras().Model(inputs, outputs, name="squeezenet")


def pix2pix_unet(input_shape=(256, 256, 3), output_channels=3):
    keras = import_keras()
    layers = keras.layers

    def down(x, filters, batchnorm=True):
        x = layers.Conv2D(filters, 4, strides=2, padding="same", use_bias=False)(x)
        if batchnorm:
            x = layers.BatchNormalization()(x)
        return layers.LeakyReLU(0.2)(x)

    def up(x, filters, dropout=False):
        x = layers.Conv2DTranspose(filters, 4, strides=2, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        if dropout:
            x = layers.Dropout(0.5)(x)
        return layers.ReLU()(x)

    x = inputs = layers.Input(input_shape)
    skips = []
    for i, filters in enumerate((64, 128, 256, 512, 512, 512, 512, 512)):
        x = down(x, filters, batchnorm=i > 0)
        skips.append(x)
    for i, (filters, skip) in enumerate(zip((512, 512, 512, 512, 256, 128, 64),
                                            reversed(skips[:-1]))):
        x = up(x, filters, dropout=i < 3)
        x = layers.Concatenate()([x, skip])
    outputs = layers.Conv2DTranspose(output_channels, 4, strides=2, padding="same",
                                     activation="tanh")(x)
    return keras.Model(inputs, outputs, name="pix2pix_unet")


ZOO = {"AlexNet": alexnet, "SqueezeNet": squeezenet, "Pix2PixUNet": pix2pix_unet}
