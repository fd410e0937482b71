"""The exception hierarchy every ClipCrop surface raises and maps.

All errors derive from :class:`ClipCropError`, so a caller can catch one type.
The CLI maps them to one ``error`` line and exit code 1, the service to a 4xx
JSON body (``http_status`` and ``code`` live on the class so that the mapping is
declared here, next to the error, rather than re-invented by each surface).
"""

from __future__ import annotations


class ClipCropError(Exception):
    """Base class of every error ClipCrop raises on purpose."""

    code: str = "clipcrop_error"
    http_status: int = 400


class InputError(ClipCropError):
    """The caller passed something ClipCrop cannot work with."""

    code = "invalid_input"
    http_status = 400


class ImageError(InputError):
    """An image could not be used."""

    code = "invalid_image"
    http_status = 415


class UnreadableImageError(ImageError):
    """The file is missing, empty, truncated, corrupt or not an image at all."""

    code = "unreadable_image"
    http_status = 415


class UnsupportedFormatError(ImageError):
    """A real file of a format ClipCrop refuses on purpose (SVG, PDF, EPS, ...)."""

    code = "unsupported_format"
    http_status = 415


class ImageTooLargeError(ImageError):
    """The image has more pixels than the configured limit (checked before decoding)."""

    code = "image_too_large"
    http_status = 422


class FileTooLargeError(ImageError):
    """The file (or upload) is bigger than the configured byte limit."""

    code = "file_too_large"
    http_status = 413


class QueryError(InputError):
    """The text query is empty, too long, or both a text and an image query were given."""

    code = "invalid_query"
    http_status = 400


class ParameterError(InputError):
    """A parameter such as ``top_k`` or ``aspect_ratio`` is out of range or malformed."""

    code = "invalid_parameter"
    http_status = 400


class OutputExistsError(ParameterError):
    """An output file (crop, overlay, ...) exists already and replacing it was not asked for."""

    code = "output_exists"
    http_status = 409


class ModelLoadError(ClipCropError):
    """A model name or folder could not be loaded (says why and what to do)."""

    code = "model_load_failed"
    http_status = 500


class BackboneLoadError(ModelLoadError):
    """A trained checkpoint loaded, but the backbone it names did not (moved, deleted, offline).

    ``checkpoint``, ``backbone`` and ``reason`` say which and why; the message names the parameter
    that points at another copy as the library spells it (``backbone=``), and each surface
    rebuilds it with its own spelling through :meth:`with_parameter` (``--backbone DIR_OR_HUB_ID``).
    """

    def __init__(
        self, checkpoint: str, backbone: str, reason: str, parameter: str = "backbone= (a folder or Hub id)"
    ) -> None:
        self.checkpoint, self.backbone, self.reason, self.parameter = checkpoint, backbone, reason, parameter
        super().__init__(
            f"checkpoint {checkpoint!r} refers to backbone {backbone!r}, which cannot be loaded ({reason}); "
            f"point at another copy with {parameter}"
        )

    def with_parameter(self, parameter: str) -> BackboneLoadError:
        return BackboneLoadError(self.checkpoint, self.backbone, self.reason, parameter)

    def __reduce__(self):  # pickled across processes (Ray workers) with its fields, not its message
        return BackboneLoadError, (self.checkpoint, self.backbone, self.reason, self.parameter)


class DatasetError(ClipCropError):
    """A training or evaluation dataset is missing files or malformed."""

    code = "invalid_dataset"
    http_status = 400


class DiskFullError(ClipCropError):
    """Writing an output (a training checkpoint) ran out of disk space; what was there is intact."""

    code = "disk_full"
    http_status = 507


__all__ = [
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
    "BackboneLoadError",
    "DatasetError",
    "DiskFullError",
]
