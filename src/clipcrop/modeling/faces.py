"""Faces as crop priors: OpenCV's Haar cascade (the classic Viola-Jones frontal-face detector).

Thumbor and Cloudinary keep faces whole when they crop; ``faces=True`` does the same here, with
the detector whose weights ship inside ``opencv-python-headless`` 4.x (5.x no longer ships the
cascade files: the ``[faces]`` extra pins ``<5``). It is fast (a few ms for a 768 px photo) and
needs no download. Boxes are **pixels xyxy of the upright image**.
"""

from __future__ import annotations

import functools
import os
import threading

import numpy as np
from PIL import Image

from ..errors import ParameterError

CASCADE = "haarcascade_frontalface_default.xml"
#: faces smaller than this share of the image's short side are noise at crop scale
MIN_FACE_SHARE = 0.04
#: the detector runs on at most this long side (faces stay found; time stays small)
DETECT_MAX_SIDE = 1024
_lock = threading.Lock()


@functools.lru_cache(maxsize=1)
def _cascade():
    try:
        import cv2
    except ImportError:
        raise ParameterError(
            "faces need OpenCV's face detector: pip install 'clipcrop[faces]' (opencv-python-headless<5)"
        ) from None
    path = os.path.join(cv2.data.haarcascades, CASCADE)
    classifier = cv2.CascadeClassifier(path)
    if classifier.empty():
        raise ParameterError(
            f"OpenCV has no {CASCADE} (opencv-python-headless 5.x no longer ships the cascades); "
            "install opencv-python-headless<5"
        )
    return classifier


def detect_faces(image: Image.Image) -> list[tuple[float, float, float, float]]:
    """Frontal faces in ``image`` (upright RGB or L), as pixel xyxy boxes, largest first.

    Raises:
        ParameterError: OpenCV (4.x, with its cascade files) is not installed.
    """
    classifier = _cascade()
    gray = image.convert("L")
    scale = min(1.0, DETECT_MAX_SIDE / max(gray.size))
    if scale < 1.0:
        gray = gray.resize((max(1, round(gray.width * scale)), max(1, round(gray.height * scale))))
    min_side = max(20, int(MIN_FACE_SHARE * min(gray.size)))
    with _lock:  # one classifier shared by threads: OpenCV's cascades are not documented thread-safe
        found = classifier.detectMultiScale(
            np.asarray(gray), scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side)
        )
    boxes = [
        (x / scale, y / scale, (x + w) / scale, (y + h) / scale)
        for x, y, w, h in np.asarray(found).reshape(-1, 4)
    ]
    boxes = [
        (max(0.0, x0), max(0.0, y0), min(float(image.width), x1), min(float(image.height), y1))
        for x0, y0, x1, y1 in boxes
    ]
    return sorted(boxes, key=lambda b: -(b[2] - b[0]) * (b[3] - b[1]))
