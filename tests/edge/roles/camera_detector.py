"""A detector plug-in for the camera tests, loaded by import path like a real one would be."""

from collections.abc import Sequence

from edge.vision.detector import Detection, Detector
from edge.vision.gate import Box, Image


def make(*, accept: bool, label: str = "vehicle") -> Detector:
    """accept=True: labels every would-be event; False: refuses every one."""

    def detect(frame: Image, boxes: Sequence[Box]) -> list[Detection]:
        if not accept:
            return []
        return [Detection(label, 0.9, (b.x, b.y, b.w, b.h)) for b in boxes[:1]]

    return detect
