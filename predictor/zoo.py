"""Common models that are not in keras.applications, built by name like them.

- ``AlexNet`` (Krizhevsky et al. 2012, single-tower variant, 227x227x3, 1000 classes);
- ``SqueezeNet`` (v1.1, fire modules, 224x224x3);
- ``Pix2PixUNet`` (the pix2pix U-Net generator, 256x256x3 -> 256x256x3).

And the held-out zoo the project wrote itself, to test the predictor on models unlike its
training zoo (never used to train, sample or tune it; ``collectors/data/model_split.json``):

- ``Pix2PixUNet64``, ``Pix2PixUNet128``: the same generator at 64x64 and 128x128;
- ``ConvAutoencoder`` (128x128x3, stride-2 convolutions down, transposed ones up);
- ``MobileNetLike`` (depthwise-separable blocks by hand, unusual widths, 160x160x3);
- ``ResNetLike`` (basic blocks, widths 40-344, 192x192x3);
- ``ViTTiny`` (a ViT-Ti/16-like encoder from Keras layers, 224x224x3);
- ``BERTTiny`` (a BERT-Tiny-like encoder over 128 tokens).
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
    """The pix2pix U-Net generator (Isola et al. 2017): 4x4 stride-2 convolutions down to 1x1,
    transposed ones back up with skip connections; as deep as the input size allows (8
    levels at 256x256, 7 at 128, 6 at 64)."""
    import math

    keras = import_keras()
    layers = keras.layers
    levels = int(math.log2(min(input_shape[:2])))

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

    widths = (64, 128, 256, 512, 512, 512, 512, 512)[:levels]
    x = inputs = layers.Input(input_shape)
    skips = []
    for i, filters in enumerate(widths):
        x = down(x, filters, batchnorm=i > 0)
        skips.append(x)
    for i, skip in enumerate(reversed(skips[:-1])):
        x = up(x, skip.shape[-1] if i >= 3 else 512, dropout=i < 3)
        x = layers.Concatenate()([x, skip])
    outputs = layers.Conv2DTranspose(output_channels, 4, strides=2, padding="same",
                                     activation="tanh")(x)
    name = "pix2pix_unet" if levels == 8 else f"pix2pix_unet_{input_shape[0]}"
    return keras.Model(inputs, outputs, name=name)


def conv_autoencoder(input_shape=(128, 128, 3)):
    """A convolutional autoencoder: stride-2 3x3 convolutions down to 8x8x256, transposed
    convolutions back up, sigmoid output."""
    keras = import_keras()
    layers = keras.layers
    x = inputs = layers.Input(input_shape)
    for filters in (32, 64, 128, 256):
        x = layers.Conv2D(filters, 3, strides=2, padding="same", activation="relu")(x)
    for filters in (128, 64, 32, 16):
        x = layers.Conv2DTranspose(filters, 3, strides=2, padding="same", activation="relu")(x)
    outputs = layers.Conv2D(input_shape[-1], 3, padding="same", activation="sigmoid")(x)
    return keras.Model(inputs, outputs, name="conv_autoencoder")


def mobilenet_like(input_shape=(160, 160, 3), classes=100):
    """A MobileNet written by hand from depthwise-separable blocks (3x3 DepthwiseConv2D, BN,
    ReLU6, 1x1 Conv2D, BN, ReLU6), with widths no keras.applications model uses."""
    keras = import_keras()
    layers = keras.layers

    def block(x, filters, stride):
        x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.ReLU(6.0)(x)
        x = layers.Conv2D(filters, 1, use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU(6.0)(x)

    x = inputs = layers.Input(input_shape)
    x = layers.Conv2D(24, 3, strides=2, padding="same", use_bias=False)(x)
    x = layers.ReLU(6.0)(layers.BatchNormalization()(x))
    for filters, stride in ((40, 1), (72, 2), (72, 1), (144, 2), (144, 1), (288, 2), (288, 1),
                            (288, 1), (576, 2), (576, 1)):
        x = block(x, filters, stride)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="mobilenet_like")


def resnet_like(input_shape=(192, 192, 3), classes=100):
    """A ResNet of basic blocks (two 3x3 convolutions and a shortcut) with unusual widths (40,
    88, 176, 344) and a 192x192 input."""
    keras = import_keras()
    layers = keras.layers

    def block(x, filters, stride):
        shortcut = x
        y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
        y = layers.ReLU()(layers.BatchNormalization()(y))
        y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
        y = layers.BatchNormalization()(y)
        if stride != 1 or shortcut.shape[-1] != filters:
            shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(shortcut)
            shortcut = layers.BatchNormalization()(shortcut)
        return layers.ReLU()(layers.Add()([y, shortcut]))

    x = inputs = layers.Input(input_shape)
    x = layers.Conv2D(40, 7, strides=2, padding="same", use_bias=False)(x)
    x = layers.ReLU()(layers.BatchNormalization()(x))
    x = layers.MaxPooling2D(3, strides=2, padding="same")(x)
    for filters, stride in ((40, 1), (40, 1), (88, 2), (88, 1), (176, 2), (176, 1), (344, 2),
                            (344, 1)):
        x = block(x, filters, stride)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = layers.Dense(classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="resnet_like")


def _encoder_block(x, heads, key_dim, ffn, layers, pre_norm):
    """A transformer encoder block: attention and a GELU feed-forward, each with a residual
    add, layer-normalised before (pre_norm, ViT) or after (BERT)."""
    width = x.shape[-1]
    h = layers.LayerNormalization(epsilon=1e-6)(x) if pre_norm else x
    h = layers.MultiHeadAttention(heads, key_dim)(h, h)
    x = layers.Add()([x, h])
    x = x if pre_norm else layers.LayerNormalization(epsilon=1e-12)(x)
    h = layers.LayerNormalization(epsilon=1e-6)(x) if pre_norm else x
    h = layers.Dense(ffn, activation="gelu")(h)
    h = layers.Dense(width)(h)
    x = layers.Add()([x, h])
    return x if pre_norm else layers.LayerNormalization(epsilon=1e-12)(x)


def vit_tiny(input_shape=(224, 224, 3), classes=1000):
    """A ViT-Tiny-like encoder (Dosovitskiy et al. 2021, the Ti/16 size): 16x16 patches
    embedded by a strided Conv2D into 196 tokens of 192 features, 12 pre-norm blocks of 3
    heads and a 768-wide GELU feed-forward, mean-pooled. No class token or position embedding
    (an element-wise add per token): only Keras layers."""
    keras = import_keras()
    layers = keras.layers
    inputs = layers.Input(input_shape)
    x = layers.Conv2D(192, 16, strides=16)(inputs)
    x = layers.Reshape((x.shape[1] * x.shape[2], 192))(x)
    for _ in range(12):
        x = _encoder_block(x, heads=3, key_dim=64, ffn=768, layers=layers, pre_norm=True)
    x = layers.LayerNormalization(epsilon=1e-6)(x)
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, layers.Dense(classes)(x), name="vit_tiny")


def bert_tiny(tokens=128, vocabulary=30522, classes=2):
    """A BERT-Tiny-like encoder (Turc et al. 2019: 2 layers, 128 features, 2 heads, a 512-wide
    feed-forward) over 128 tokens: token and position embeddings (two integer inputs), two
    post-norm blocks, mean-pooled into a classifier."""
    keras = import_keras()
    layers = keras.layers
    ids = layers.Input((tokens,), dtype="int32", name="token_ids")
    positions = layers.Input((tokens,), dtype="int32", name="positions")
    x = layers.Add()([layers.Embedding(vocabulary, 128)(ids),
                      layers.Embedding(512, 128)(positions)])
    x = layers.LayerNormalization(epsilon=1e-12)(x)
    for _ in range(2):
        x = _encoder_block(x, heads=2, key_dim=64, ffn=512, layers=layers, pre_norm=False)
    x = layers.GlobalAveragePooling1D()(x)
    return keras.Model([ids, positions], layers.Dense(classes)(x), name="bert_tiny")


ZOO = {
    "AlexNet": alexnet,
    "SqueezeNet": squeezenet,
    "Pix2PixUNet": pix2pix_unet,
    # the held-out zoo the project wrote itself (never trained or tuned on)
    "Pix2PixUNet64": lambda input_shape=(64, 64, 3): pix2pix_unet(input_shape),
    "Pix2PixUNet128": lambda input_shape=(128, 128, 3): pix2pix_unet(input_shape),
    "ConvAutoencoder": conv_autoencoder,
    "MobileNetLike": mobilenet_like,
    "ResNetLike": resnet_like,
    "ViTTiny": vit_tiny,
    "BERTTiny": bert_tiny,
}
