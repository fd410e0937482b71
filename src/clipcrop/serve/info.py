"""``GET /v1/info``: the limits and choices a client (the web page first) must respect.

The page used to hard-code them (top-k up to 50 where the server allowed 90, five aspect
presets); now it asks the server, so the form can never offer what the server refuses nor refuse
what it accepts. Everything here is what the service enforces: the same :class:`~clipcrop.limits.Limits`
object and the loaded model's number of crops.
"""

from __future__ import annotations

import functools

from PIL import Image
from pydantic import BaseModel, Field

from ..crop_options import MAX_OUTPUT_SIDE
from ..errors import ParameterError
from ..limits import Limits

#: ``top_k`` when a request gives none
DEFAULT_TOP_K = 5
#: aspect ratios the page offers as presets (any other ``W:H`` is accepted too), portrait to wide
ASPECT_PRESETS = ("1:1", "4:5", "2:3", "3:4", "4:3", "3:2", "16:9", "9:16")
#: formats ``POST /v1/crop/image`` can answer in
OUTPUT_FORMATS = ("jpeg", "png", "webp")


class InfoResponse(BaseModel):
    model: str = Field(description="the model: a Hub id, or a local folder's last part")
    mode: str = Field(description="'trained' (ClipCrop checkpoint) or 'training-free' (plain OWL-ViT)")
    version: str
    max_top_k: int = Field(description="largest top_k: the model's number of crops, capped by the limits")
    default_top_k: int
    max_upload_bytes: int = Field(description="largest image (and query image) upload, in bytes")
    max_pixels: int = Field(description="largest image, width x height, read from its header")
    max_query_chars: int = Field(description="longest text query, after whitespace is collapsed")
    formats: list[str] = Field(description="image formats accepted (Pillow names), judged by the bytes")
    media_types: list[str] = Field(description="the same as media types, for a file input's accept")
    output_formats: list[str] = Field(description="formats POST /v1/crop/image can answer in")
    aspect_presets: list[str] = Field(description="suggested W:H ratios; any positive W:H is accepted")
    max_output_side: int = Field(description="largest width or height the size field accepts, in pixels")
    faces: bool = Field(
        description="faces=true works here: OpenCV's face detector (clipcrop[faces]) is installed"
    )


#: media types of formats whose Pillow plugin may not be loaded (so not in ``Image.MIME``) yet
_PLUGIN_MEDIA = {"HEIF": "image/heic", "AVIF": "image/avif"}


def info_body(limits: Limits, max_top_k: int, model: str, mode: str, version: str) -> dict:
    """The ``/v1/info`` object for these limits and this model."""
    formats = list(limits.allowed_formats)
    Image.init()  # registers every plugin's media type in Image.MIME
    media = {Image.MIME.get(f) or _PLUGIN_MEDIA.get(f) for f in formats} - {None}
    return {
        "model": model,
        "mode": mode,
        "version": version,
        "max_top_k": int(max_top_k),
        "default_top_k": min(DEFAULT_TOP_K, int(max_top_k)),
        "max_upload_bytes": int(limits.max_file_bytes),
        "max_pixels": int(limits.max_pixels),
        "max_query_chars": int(limits.max_query_chars),
        "formats": formats,
        "media_types": sorted(media),
        "output_formats": list(OUTPUT_FORMATS),
        "aspect_presets": list(ASPECT_PRESETS),
        "max_output_side": MAX_OUTPUT_SIDE,
        "faces": faces_problem() is None,
    }


@functools.lru_cache(maxsize=1)
def faces_problem() -> str | None:
    """Why ``faces=true`` cannot work in this process (the library's message: OpenCV missing, or
    a 5.x without the cascade files), or None when it can. Asked once: the detector is loaded by
    running it on a blank 8 x 8 picture through :func:`clipcrop.modeling.faces.detect_faces`."""
    from ..modeling.faces import detect_faces

    try:
        detect_faces(Image.new("L", (8, 8)))
    except ParameterError as exc:
        return str(exc)
    return None


def require_faces() -> None:
    """Raise the library's :class:`~clipcrop.errors.ParameterError` when faces cannot be found here,
    so that a request asking for them is refused before its upload is read."""
    problem = faces_problem()
    if problem is not None:
        raise ParameterError(problem)
