"""Concept classifiers, chosen by name: what labels an image as showing a cat.

`resolve()` turns the --classifier / --classes / --label_threshold flags into a frozen
ClassifierSpec, doing the one-time work (the cached ONNX export) in the launching
process, so workers only load a file (the built-in model's from their own cache).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from memgen.classify.onnx_model import (
    EFFICIENTNET,
    EFFICIENTNET_CAT_CLASSES,
    EFFICIENTNET_SIZE,
    SOFTMAX,
    InputSpec,
    efficientnet_onnx_path,
    inspect_model,
    missing_vision_module,
)
from memgen.decode import DEFAULT_MAX_PIXELS

CAPTION = "caption"
ONNX_PREFIX = "onnx:"
CLASSIFIERS = {
    EFFICIENTNET: "EfficientNet-Lite0 (ImageNet) under onnxruntime; P(cat) = classes 281-285",
    CAPTION: "keyword match of captions / alt text, multilingual, no model",
    ONNX_PREFIX + "PATH": "your ONNX model; --classes names the concept's output indices",
}
# P(cat) threshold of EfficientNet-Lite0. Chosen on the shared labelled photos, where
# cats' probability spreads over the five cat classes and lynx: at 0.1, sensitivity 0.89
# and specificity 1.00 (at 0.5: 0.54 and 1.00). Calibrate (--calibration) for your data.
EFFICIENTNET_THRESHOLD = 0.1
DEFAULT_THRESHOLD = 0.5
MAX_CLASSES = 1 << 20  # --classes indices: far more than any classifier's outputs


@dataclass(frozen=True)
class ClassifierSpec:
    name: str  # efficientnet-lite0 | caption | onnx:PATH
    kind: str  # onnx | caption
    threshold: float = DEFAULT_THRESHOLD
    model_path: str | None = None  # an ONNX file's path or URL, or EFFICIENTNET: the built-in export
    classes: tuple[int, ...] = ()
    input: InputSpec | None = None
    scores: str = SOFTMAX  # how the model's first output reads (onnx_model.output_kind)
    max_pixels: int = DEFAULT_MAX_PIXELS  # images larger are failures: the memory's --max_pixels

    def row(self) -> dict:
        """The classifier as described in report.json."""
        return {"name": self.name, "kind": self.kind,  # captions are matched, not scored
                "threshold": self.threshold if self.kind == "onnx" else None,
                "classes": list(self.classes), "model": self.model_path,
                "scores": self.scores if self.kind == "onnx" else None}


class ClassifierError(ValueError):
    """A classifier that cannot be used as asked (one line for the user)."""


def default_classifier() -> str:
    """EfficientNet-Lite0 when the vision extra is installed, else the caption matcher."""
    return CAPTION if missing_vision_module() else EFFICIENTNET


def parse_classes(text: str) -> tuple[int, ...]:
    """'281-285,287' -> (281, 282, 283, 284, 285, 287)."""
    try:
        ranges = [(int(low), int(high or low)) for low, _, high in
                  (part.partition("-") for part in filter(None, (p.strip() for p in text.split(","))))]
    except ValueError:
        raise ClassifierError(f"--classes must look like 281-285,287, got {text!r}") from None
    if not ranges or any(low < 0 or high < low for low, high in ranges):
        raise ClassifierError(f"--classes names no valid class index: {text!r}")
    if max(high for _, high in ranges) >= MAX_CLASSES:
        raise ClassifierError(f"--classes names an index over {MAX_CLASSES - 1}: {text!r}")
    return tuple(sorted({c for low, high in ranges for c in range(low, high + 1)}))


def resolve(name: str | None, classes: str | None, threshold: float | None) -> ClassifierSpec:
    """The ClassifierSpec of the flags; exports EfficientNet to ONNX once (cached)."""
    name = name or default_classifier()
    if threshold is not None and not 0 <= threshold <= 1:
        raise ClassifierError(f"--label_threshold must be between 0 and 1, got {threshold}")
    if name == CAPTION:
        if classes:
            raise ClassifierError("--classes applies to onnx:PATH classifiers only")
        if threshold is not None:  # it was recorded in the report as if it had applied
            raise ClassifierError("--label_threshold applies to model classifiers; caption labels by "
                                  "keyword match")
        return ClassifierSpec(CAPTION, "caption", 0.5)
    if name == EFFICIENTNET:
        if classes:
            raise ClassifierError(f"--classes applies to onnx:PATH classifiers; {EFFICIENTNET} uses 281-285")
        efficientnet_onnx_path()  # exported once, here; workers read their own cache (read_model)
        chosen = EFFICIENTNET_THRESHOLD if threshold is None else threshold
        return ClassifierSpec(EFFICIENTNET, "onnx", chosen, EFFICIENTNET, EFFICIENTNET_CAT_CLASSES,
                              InputSpec(EFFICIENTNET_SIZE, "uint8", "nhwc"))
    if name.startswith(ONNX_PREFIX):
        return _user_onnx(name, classes, DEFAULT_THRESHOLD if threshold is None else threshold)
    raise ClassifierError(f"unknown classifier {name!r}; choose {', '.join(CLASSIFIERS)}")


def _user_onnx(name: str, classes: str | None, threshold: float) -> ClassifierSpec:
    path = name[len(ONNX_PREFIX):]
    if not path.strip():  # with --classes it loaded the working directory as the model
        raise ClassifierError(f"{name} names no model file: give onnx:PATH")
    if "://" not in path:  # never the built-in model's name (read_model), whatever the file is called
        path = os.path.abspath(os.path.expanduser(path))  # onnx:~/m.onnx: no shell expands it
    if not classes:
        raise ClassifierError(f"{name} needs --classes: the output indices of the concept, e.g. 281-285")
    missing = missing_vision_module()
    if missing in ("onnxruntime", "onnx"):
        raise ClassifierError(f"onnx:PATH classifiers need {missing}: pip install 'memgen[vision]'")
    chosen = parse_classes(classes)
    try:
        spec, scores = inspect_model(path, chosen)
    except ValueError as e:
        raise ClassifierError(str(e)) from None
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types for missing or bad files
        raise ClassifierError(f"cannot load ONNX model {path}: {type(e).__name__}: {str(e)[:200]}") from None
    return ClassifierSpec(name, "onnx", threshold, path, chosen, spec, scores)
