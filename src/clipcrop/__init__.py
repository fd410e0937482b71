"""ClipCrop: conditioned smart cropping on OWL-ViT (ICCV 2023).

``from clipcrop import ClipCrop`` is cheap: torch and transformers are imported only when a
model is built, so that ``clipcrop --help`` and argument errors answer instantly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ClipCropError,
    DatasetError,
    FileTooLargeError,
    ImageError,
    ImageTooLargeError,
    InputError,
    ModelLoadError,
    OutputExistsError,
    ParameterError,
    QueryError,
    UnreadableImageError,
    UnsupportedFormatError,
)
from .limits import Limits

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .modeling.detection import Detection, DetectionResult
    from .predictor import ClipCrop, Crop, CropResult, EncodedImage

_LAZY = {
    "ClipCrop": "predictor",
    "Crop": "predictor",
    "CropResult": "predictor",
    "EncodedImage": "predictor",
    "Detection": "modeling.detection",
    "DetectionResult": "modeling.detection",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'clipcrop' has no attribute {name!r}")


__all__ = [
    "ClipCrop",
    "Crop",
    "CropResult",
    "EncodedImage",
    "Detection",
    "DetectionResult",
    "Limits",
    "ClipCropError",
    "InputError",
    "ImageError",
    "UnreadableImageError",
    "UnsupportedFormatError",
    "ImageTooLargeError",
    "FileTooLargeError",
    "QueryError",
    "ParameterError",
    "OutputExistsError",
    "ModelLoadError",
    "DatasetError",
]
