"""The optional stage after the gate: a detector that confirms (and labels) a motion event.

The gate stands alone; a detector is a plug-in named by import path in the camera's config,
`"package.module:factory"`. The factory is called once with the detector's options (a dict from
the config) and returns a callable `detect(frame, boxes) -> list[Detection]`. It runs once per
would-be event, on the frame that would start it (not on every frame): an empty list refuses the
event. An ONNX model shipped in a package fits here, e.g. through `cv2.dnn.readNetFromONNX`.
"""

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from edge.vision.gate import Box, Image


@dataclass(frozen=True, slots=True)
class Detection:
    label: str
    score: float
    box: tuple[int, int, int, int] | None = None  # x, y, w, h in the frame's pixels


class Detector(Protocol):
    def __call__(self, frame: Image, boxes: Sequence[Box]) -> Sequence[Detection]: ...


class DetectorLoadError(ValueError):
    """The detector named in the config cannot be imported or built."""


def load_detector(path: str, options: Mapping[str, Any]) -> Detector:
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise DetectorLoadError(f"{path!r}: expected 'package.module:factory'")
    try:
        factory: Callable[..., Detector] = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise DetectorLoadError(f"{path!r}: {err}") from err
    try:
        return factory(**options)
    except Exception as err:
        raise DetectorLoadError(f"{path!r}: could not be built: {err}") from err
