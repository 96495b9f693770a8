"""The supported backbones: a registry of data, and the one function that builds them.

Every backbone here takes RGB normalised to [-1, 1] (INPUT_MEAN / INPUT_STD below), the
convention of the standard hosted TFLite classifiers, so one preprocessing path serves them all.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trainer import UserError

log = logging.getLogger(__name__)

# normalised = (pixel - INPUT_MEAN) / INPUT_STD, pixel in [0, 255] -> [-1, 1]
INPUT_MEAN = 127.5
INPUT_STD = 127.5
DEFAULT_ARCHITECTURE = "inception_v3"


@dataclass(frozen=True)
class Backbone:
    """One architecture: what to call in keras.applications, with what, at what input size."""

    name: str
    application: str  # the keras.applications constructor
    input_size: tuple[int, int]  # (height, width) in pixels
    bottleneck_size: int  # length of the pooled penultimate vector
    options: tuple[tuple[str, object], ...] = ()  # extra constructor arguments
    imagenet_sizes: tuple[int, ...] = ()  # input sizes Keras has ImageNet weights for


# Families parameterised by width multiplier (alpha) and input size; names follow the classic
# retrain.py: mobilenet_v1_0.25_128 (classic spelling mobilenet_0.25_128), mobilenet_v2_0.5_224.
MOBILENET_V1_ALPHAS = ("0.25", "0.5", "0.75", "1.0")
MOBILENET_V2_ALPHAS = ("0.35", "0.5", "0.75", "1.0", "1.3", "1.4")
MOBILENET_V1_SIZES = (128, 160, 192, 224)
MOBILENET_V2_SIZES = (96, 128, 160, 192, 224)

FIXED_BACKBONES = {
    backbone.name: backbone
    for backbone in (
        Backbone("inception_v3", "InceptionV3", (299, 299), 2048, imagenet_sizes=(299,)),
        # include_preprocessing=False: Keras' MobileNetV3 otherwise expects [0, 255] inputs.
        Backbone("mobilenet_v3_small", "MobileNetV3Small", (224, 224), 576,
                 (("include_preprocessing", False),), (224,)),
        Backbone("mobilenet_v3_large", "MobileNetV3Large", (224, 224), 960,
                 (("include_preprocessing", False),), (224,)),
    )
}
PARAMETERISED_NAME = re.compile(r"^mobilenet(?:_(v1|v2))?_(\d+(?:\.\d+)?)_(\d+)$")


def architecture_names() -> list[str]:
    """Every name `get_backbone` accepts, for --help and error messages."""
    return [
        *FIXED_BACKBONES,
        *(f"mobilenet_v1_{alpha}_{size}" for alpha in MOBILENET_V1_ALPHAS for size in MOBILENET_V1_SIZES),
        *(f"mobilenet_v2_{alpha}_{size}" for alpha in MOBILENET_V2_ALPHAS for size in MOBILENET_V2_SIZES),
    ]


def get_backbone(name: str) -> Backbone:
    """Look up an architecture by name, or raise UserError listing the families."""
    if name in FIXED_BACKBONES:
        return FIXED_BACKBONES[name]
    match = PARAMETERISED_NAME.match(name)
    if match:
        version, alpha, size = match.group(1) or "v1", match.group(2), int(match.group(3))
        alpha = f"{float(alpha):g}"
        alpha = alpha if "." in alpha else f"{alpha}.0"  # 1 -> 1.0, as Keras names the files
        if version == "v1" and alpha in MOBILENET_V1_ALPHAS and size >= 32:
            return Backbone(f"mobilenet_v1_{alpha}_{size}", "MobileNet", (size, size),
                            int(1024 * float(alpha)), (("alpha", float(alpha)),), MOBILENET_V1_SIZES)
        if version == "v2" and alpha in MOBILENET_V2_ALPHAS and size >= 32:
            bottleneck = 1280 if float(alpha) <= 1.0 else int(1280 * float(alpha))
            return Backbone(f"mobilenet_v2_{alpha}_{size}", "MobileNetV2", (size, size),
                            bottleneck, (("alpha", float(alpha)),), MOBILENET_V2_SIZES)
    raise UserError(
        f"unknown architecture {name!r}: use inception_v3, mobilenet_v3_small, mobilenet_v3_large, "
        f"mobilenet_v1_<alpha>_<size> (alpha {', '.join(MOBILENET_V1_ALPHAS)}) or "
        f"mobilenet_v2_<alpha>_<size> (alpha {', '.join(MOBILENET_V2_ALPHAS)})"
    )


def weights_id(weights: str, seed: int) -> str:
    """A short name for a weights choice, part of the bottleneck cache key.

    A weights file is named by its content, so a replaced file never reuses old bottlenecks;
    random weights depend on the seed they were drawn with.
    """
    if weights == "imagenet":
        return "imagenet"
    if weights == "none":
        return f"random-seed{seed}"
    path = Path(weights)
    if not path.is_file():
        raise UserError(f"--weights {weights}: no such file (give 'imagenet', 'none' or a Keras no-top weights file)")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return f"file-{digest[:16]}"


def check_imagenet_size(backbone: Backbone, weights: str) -> None:
    """A UserError when `weights` is "imagenet" and Keras has none at the backbone's input size."""
    height = backbone.input_size[0]
    if weights == "imagenet" and height not in backbone.imagenet_sizes:
        raise UserError(
            f"Keras has no ImageNet weights for {backbone.name} at {height} px "
            f"(it has {', '.join(map(str, backbone.imagenet_sizes))}); pick another size or pass --weights none"
        )


def build_backbone(backbone: Backbone, weights: str, seed: int):
    """Build the headless Keras backbone: float32 (batch, h, w, 3) in [-1, 1] -> (batch, bottleneck_size).

    weights: "imagenet" (Keras' cached download), "none" (random, drawn from `seed`) or a path.
    """
    import keras

    height, width = backbone.input_size
    check_imagenet_size(backbone, weights)
    if weights == "none":
        log.warning("--weights none: the backbone is random; accuracy will be poor (meant for tests and offline demos)")
    constructor = getattr(keras.applications, backbone.application)
    try:
        model = constructor(
            input_shape=(height, width, 3),
            include_top=False,
            weights=None if weights == "none" else weights,
            pooling="avg",
            **dict(backbone.options),
        )
    except Exception as error:
        if weights == "imagenet" and "URL fetch failure" in str(error):
            raise UserError(
                f"could not download the ImageNet weights for {backbone.name} (offline?): connect once "
                "so Keras caches them, or pass --weights PATH to a Keras no-top weights file"
            ) from None
        if weights not in ("imagenet", "none"):
            raise UserError(f"--weights {weights} does not fit {backbone.name}: {str(error).splitlines()[0]}") from None
        raise
    if weights == "none":
        randomise_variance_preserving(model, seed)
    return model


def randomise_variance_preserving(model, seed: int) -> None:
    """Redraw every convolution kernel from He-normal, seeded.

    Keras' default initialisation with inference-mode batch norm shrinks activations layer by
    layer until the pooled output is ~1e-11 (nothing to learn from); He scaling keeps it near 1,
    so a random backbone gives usable random features. Seeded numpy draws make the weights, and
    so the cached bottlenecks, identical in every run with the same seed.
    """
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            fan_in = int(np.prod(layer.kernel.shape[:2]))
        elif isinstance(layer, keras.layers.Conv2D):
            fan_in = int(np.prod(layer.kernel.shape[:-1]))
        else:
            continue
        layer.kernel.assign(rng.normal(0.0, np.sqrt(2.0 / fan_in), layer.kernel.shape).astype(np.float32))
