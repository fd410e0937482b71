"""What the service's requests and answers look like: the form fields, the JSON answers, and the
error statuses each endpoint declares (all of it shows in ``/openapi.json`` and ``/docs``).

Boxes are ``x0, y0, x1, y1`` in pixels of the upright original (EXIF orientation applied): whole
pixels with x1/y1 exclusive for crops, float pixels for OWL-ViT's detections.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import File, Form, UploadFile
from pydantic import BaseModel, Field

from ..validation import MAX_DETECTIONS


class ErrorDetail(BaseModel):
    code: str = Field(description="machine-readable error code, e.g. unreadable_image, queue_full")
    message: str = Field(description="what went wrong and what to change, for people")


class ErrorBody(BaseModel):
    """Body of every 4xx/5xx answer."""

    error: ErrorDetail


class CropItem(BaseModel):
    box: list[int] = Field(description="x0, y0, x1, y1 in pixels of the upright original; x1/y1 exclusive")
    score: float = Field(description="quality score in [0, 1]")
    aspect: str | None = Field(None, description="the ratio W:H this crop was made for; null for a free crop")
    focus: list[float] | None = Field(
        None, description="x, y: the subject's centre moved inside the crop, in pixels (a focal point)"
    )
    output_size: list[int] | None = Field(
        None, description="width, height the crop is written at; only when a size was asked for"
    )


class PriorItem(BaseModel):
    box: list[float] = Field(description="x0, y0, x1, y1: float pixels of the upright original")
    kind: Literal["keep", "avoid", "face"] = Field(
        description="keep and face: crops hold it whole; avoid: crops leave it out"
    )
    weight: float = Field(description="how much a crop loses for breaking it (1 outweighs any score)")


class CropResponse(BaseModel):
    """The CLI's ``--json`` object for the uploaded image, plus ``mode`` and ``timings``."""

    image: str = Field(description="the uploaded file name")
    width: int
    height: int
    query: str | None = Field(description="the text query after cleaning, or null")
    image_query: str | None = Field(None, description="file name of the query image, when one was sent")
    crops: list[CropItem] = Field(
        description="ranked crops, best first; with several aspect ratios top_k per ratio, grouped in the order given"
    )
    error: str | None = Field(description="always null in a 200 answer")
    truncated: bool | None = Field(None, description="the text was longer than OWL-ViT reads (text queries)")
    subject: list[int] | None = Field(
        description="the condition's union box b_u in pixels (x0, y0, x1, y1); null without a condition"
    )
    priors: list[PriorItem] = Field(
        description="the regions the ranking kept whole or left out: keep/avoid boxes, faces, avoided texts"
    )
    mode: str = Field(description="trained or training-free")
    union_box: list[int] = Field(description="union of the boxes the condition selected (b_u)")
    keywords: list[str]
    timings: dict[str, float] = Field(description="seconds per stage")


class DetectionItem(BaseModel):
    box: list[float] = Field(description="x0, y0, x1, y1: float pixels of the upright original, clamped")
    score: float = Field(description="OWL-ViT's probability, sigmoid(logit)")
    logit: float
    token: int = Field(description="index of the image token that predicts this box")


class DetectResponse(BaseModel):
    """``clipcrop detect --json``'s object for the uploaded image, plus ``timings``."""

    image: str = Field(description="the uploaded file name")
    width: int
    height: int
    query: str | None = Field(description="the text query after cleaning (used whole), or null")
    image_query: str | None = Field(None, description="file name of the query image, when one was sent")
    query_token: int | None = Field(None, description="the query image's token whose embedding was used")
    truncated: bool | None = Field(None, description="the text was longer than OWL-ViT reads (text queries)")
    detections: list[DetectionItem] = Field(description="best first")
    error: str | None = Field(description="always null in a 200 answer")
    timings: dict[str, float] = Field(description="seconds per stage")


class HealthResponse(BaseModel):
    status: str
    version: str


class ReadyResponse(BaseModel):
    status: str
    model: str
    mode: str
    max_top_k: int
    running: int = Field(description="requests being processed now")
    waiting: int = Field(description="requests waiting for a worker")
    max_concurrency: int
    max_queue: int


_ERROR_TEXT = {
    400: "Bad parameters (missing image, bad top_k, aspect, size or box, empty query or avoid text, "
    "size with several ratios, faces without OpenCV, both query and image_query; for /v1/detect also neither)",
    401: "API key missing or wrong (send Authorization: Bearer KEY or X-API-Key: KEY)",
    408: "The upload was too slow",
    413: "Upload larger than the limit",
    415: "Not an image, or a refused format (SVG, PDF, ...), judged by its bytes",
    422: "Image has more pixels than the limit",
    429: "Work queue full; retry after Retry-After seconds",
    500: "Internal error (a bug; details are in the server log)",
    503: "Model not loaded yet",
    504: "The request took longer than the time limit",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The ``responses=`` of a route that may answer these error statuses."""
    return {s: {"model": ErrorBody, "description": _ERROR_TEXT[s]} for s in statuses}


#: what the crop and detect endpoints may answer besides 200
WORK_ERRORS = error_responses(400, 401, 408, 413, 415, 422, 429, 500, 503, 504)

# form fields (the route modules import them by name: FastAPI resolves the postponed annotations
# in the globals of the module that defines the route)
ImageField = Annotated[UploadFile, File(description="the photo to crop (JPEG, PNG, WebP, GIF, BMP, TIFF)")]
QueryField = Annotated[
    str | None, Form(description="what the crop should show, in words (or give image_query, or neither)")
]
QueryImageField = Annotated[
    UploadFile | None, File(description="a reference image of what the crop should show")
]
DetectQueryField = Annotated[
    str | None, Form(description="what to detect, in words, used whole (or give image_query)")
]
DetectTopKField = Annotated[
    int, Form(ge=1, le=MAX_DETECTIONS, description=f"number of detections (1 .. {MAX_DETECTIONS})")
]
TopKField = Annotated[
    int, Form(ge=1, le=1000, description="number of crops (1 .. max_top_k, which /v1/info and /ready report)")
]
AspectField = Annotated[
    list[str] | None,
    Form(
        description="exact aspect ratio W:H of every crop, e.g. 1:1, 16:9; empty or 'free' = any. Several "
        "(1:1,4:5 or the field repeated): top_k crops per ratio, grouped in that order, the image encoded once",
        examples=[["1:1"], ["1:1,4:5,16:9"]],
    ),
]
SizeField = Annotated[
    str | None,
    Form(
        description="exact output size WIDTHxHEIGHT in pixels (each crop's output_size; /v1/crop/image "
        "answers the best crop at that size); the aspect follows from it unless given; one ratio only",
        examples=["1080x1350"],
    ),
]
UpscaleField = Annotated[
    bool, Form(description="let size enlarge a crop smaller than it (default: scaled down to fit, never up)")
]
KeepField = Annotated[
    list[str] | None,
    Form(description="a region crops keep whole: x0,y0,x1,y1[,weight] in pixels (repeat the field for more)"),
]
AvoidBoxField = Annotated[
    list[str] | None,
    Form(description="a region crops leave out: x0,y0,x1,y1[,weight] in pixels (repeat the field for more)"),
]
AvoidField = Annotated[
    list[str] | None,
    Form(description="what crops should leave out, in words: OWL-ViT's detections of it (repeatable)"),
]
FacesField = Annotated[
    bool, Form(description="keep faces whole (OpenCV's face detector; /v1/info says whether it is installed)")
]
FormatField = Annotated[Literal["jpeg", "png", "webp"], Form(description="picture format of the answer")]
StripMetadataField = Annotated[
    bool,
    Form(description="leave out the upload's EXIF (camera, date, GPS, copyright); its ICC profile stays"),
]
StripIccField = Annotated[bool, Form(description="leave out the upload's ICC colour profile")]
