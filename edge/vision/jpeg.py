"""Snapshot encoding: one JPEG of a frame, at most `max_width` wide."""

import cv2

from edge.vision.gate import Image


class EncodeError(ValueError):
    """OpenCV could not encode the frame."""


def encode_jpeg(frame: Image, *, max_width: int, quality: int) -> bytes:
    height, width = frame.shape[:2]
    if width > max_width:
        size = (max_width, max(1, round(height * max_width / width)))
        frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise EncodeError(f"cannot encode a {width}x{height} frame as JPEG")
    return bytes(data)
