"""One limits object that every surface (library, CLI, service, batch) shares.

Defaults are safe for a public service; every value can be changed in code, by a
CLI flag or an environment variable (``CLIPCROP_MAX_MEGAPIXELS`` and friends, see
:meth:`Limits.from_env`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

#: Formats Pillow may decode. Vector and document formats are never accepted.
DEFAULT_FORMATS: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "MPO", "HEIF", "AVIF")


@dataclass(frozen=True)
class Limits:
    """Input limits, checked before any expensive work.

    Attributes:
        max_pixels: largest source image (width * height), read from the header before decoding.
        max_file_bytes: largest file or upload in bytes.
        max_query_chars: longest text query, in characters after stripping.
        max_top_k: largest ``top_k`` (``None`` means the model's number of crops M).
        allowed_formats: Pillow format names that may be decoded.
        decode_max_side: images are reduced while decoding so that their longer side is below
            this size (JPEG draft: between half of it and it; other formats: an integer reduce
            once above twice it); the backbone sees 768-960 px, so decoding 40 MP is waste.
        request_timeout_s: service: longest time a request may wait and run.
        max_concurrency: service: requests processed at once.
        max_queue: service: requests allowed to wait; past it the answer is 429.
    """

    max_pixels: int = 50_000_000
    max_file_bytes: int = 25 * 1024 * 1024
    max_query_chars: int = 512
    max_top_k: int | None = None
    allowed_formats: tuple[str, ...] = field(default=DEFAULT_FORMATS)
    decode_max_side: int = 2048
    request_timeout_s: float = 60.0
    max_concurrency: int = 1
    max_queue: int = 16

    _ENV = {
        "max_pixels": ("CLIPCROP_MAX_MEGAPIXELS", lambda v: int(float(v) * 1_000_000)),
        "max_file_bytes": ("CLIPCROP_MAX_UPLOAD_MB", lambda v: int(float(v) * 1024 * 1024)),
        "max_query_chars": ("CLIPCROP_MAX_QUERY_CHARS", int),
        "max_top_k": ("CLIPCROP_MAX_TOP_K", int),
        "decode_max_side": ("CLIPCROP_DECODE_MAX_SIDE", int),
        "request_timeout_s": ("CLIPCROP_REQUEST_TIMEOUT_S", float),
        "max_concurrency": ("CLIPCROP_MAX_CONCURRENCY", int),
        "max_queue": ("CLIPCROP_MAX_QUEUE", int),
    }

    @classmethod
    def from_env(cls, **overrides: object) -> Limits:
        """Defaults, then ``CLIPCROP_*`` environment variables, then explicit ``overrides`` (non-None)."""
        values: dict[str, object] = {}
        for name, (var, conv) in cls._ENV.items():
            if os.environ.get(var):
                try:
                    values[name] = conv(os.environ[var])
                except ValueError:
                    from .errors import ParameterError

                    raise ParameterError(f"{var}={os.environ[var]!r} is not a number") from None
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def replace(self, **changes: object) -> Limits:
        return dataclasses.replace(self, **changes)


DEFAULT_LIMITS = Limits()
