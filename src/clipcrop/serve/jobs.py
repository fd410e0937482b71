"""One crop or detect request: its form checked cheaply on the event loop (:func:`prepare_job`,
every parameter error before the first byte of an upload is read), then the expensive part run
by the work queue in a worker thread (:class:`Job`'s methods).

A crop form's options (aspect ratios, size, upscale, keep / avoid boxes, avoid texts, faces)
become a :class:`~clipcrop.crop_options.CropOptions` through :meth:`CropOptions.build`, the one
check every surface shares: the service converts form values, it never checks them on its own.

Boxes are ``x0, y0, x1, y1`` in pixels of the upright original (see :class:`~clipcrop.predictor.CropResult`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import Request
from PIL import Image
from starlette.datastructures import UploadFile as StarletteUploadFile

from ..crop_options import CropOptions
from ..errors import FileTooLargeError, ParameterError, QueryError
from ..io.images import LoadedImage, decode_bytes
from ..validation import MAX_DETECTIONS, validate_query, validate_query_pair, validate_top_k
from .info import require_faces
from .state import ServiceState

if TYPE_CHECKING:
    from ..predictor import ClipCrop, CropResult


@dataclass(frozen=True)
class Upload:
    """An uploaded file: its bytes, and the name answers show (its file name, without folders)."""

    data: bytes
    name: str


@dataclass(frozen=True)
class DecodedUploads:
    """The image and the query image (or None) decoded, and the seconds that took."""

    image: LoadedImage
    query_image: LoadedImage | None
    seconds: float


@dataclass(frozen=True)
class CroppedUpload:
    """The decoded upload and its crops."""

    loaded: LoadedImage
    result: CropResult


@dataclass(frozen=True)
class CropPicture:
    """``POST /v1/crop/image``'s answer: the encoded best crop, its media type, and the crops."""

    data: bytes
    media_type: str
    result: CropResult


@dataclass(frozen=True)
class CropFields:
    """A crop form's option fields as received (strings, lists of strings for repeatable fields);
    :meth:`options` turns them into :class:`~clipcrop.crop_options.CropOptions`."""

    aspect: list[str] | None = None
    size: str | None = None
    upscale: bool = False
    keep: list[str] | None = None
    avoid_box: list[str] | None = None
    avoid: list[str] | None = None
    faces: bool = False

    def options(self, top_k: int) -> CropOptions:
        """The request's options, built (and so checked) by :meth:`CropOptions.build`; repeated
        ``aspect`` fields (a page's checkboxes) join as one comma list, an empty one is free.

        Raises:
            ParameterError: what :meth:`CropOptions.build` refuses; faces asked for where OpenCV's
                detector is not installed.
        """
        options = CropOptions.build(
            top_k=top_k,
            aspect_ratio=",".join(self.aspect or ()) or None,
            size=self.size,
            upscale=self.upscale,
            keep=self.keep or (),
            avoid_box=self.avoid_box or (),
            avoid=self.avoid or (),
            faces=self.faces,
        )
        if options.faces:
            require_faces()
        return options


@dataclass(frozen=True)
class Job:
    """One checked request; its methods do the work (in a worker thread). ``options``: the crop
    request's (None for a detect request, which has only ``top_k``)."""

    service: ServiceState
    predictor: ClipCrop
    image: Upload
    query: str | None
    image_query: Upload | None
    top_k: int
    options: CropOptions | None = None

    def decode(self) -> DecodedUploads:
        limits = self.service.limits
        t0 = time.perf_counter()
        loaded = decode_bytes(self.image.data, limits, name=self.image.name)
        query_image = (
            decode_bytes(self.image_query.data, limits, name=self.image_query.name)
            if self.image_query is not None
            else None
        )
        return DecodedUploads(loaded, query_image, time.perf_counter() - t0)

    def detect_json(self) -> dict:
        """``POST /v1/detect``'s answer: :meth:`ClipCrop.detect`'s ``to_dict()`` plus ``timings``."""
        t0 = time.perf_counter()
        decoded = self.decode()
        result = self.predictor.detect(
            decoded.image, query=self.query, image_query=decoded.query_image, top_k=self.top_k
        )
        timings = {**result.timings, "decode": decoded.seconds, "total": time.perf_counter() - t0}
        return {**result.to_dict(), "timings": {k: round(v, 6) for k, v in timings.items()}}

    def crop(self) -> CroppedUpload:
        """The library's crops for the decoded upload with the request's options: what
        :meth:`ClipCrop.crop` answers for the same bytes, condition and options."""
        decoded = self.decode()
        predictor = self.predictor
        condition = predictor.prepare_condition(self.query, decoded.query_image)
        options = self.options or CropOptions.build(top_k=self.top_k)
        result = predictor.crop_encoded(predictor.encode(decoded.image), condition, options=options)
        result.timings["decode"] = decoded.seconds  # the predictor got decoded images: report our decode
        return CroppedUpload(decoded.image, result)

    def crop_json(self) -> dict:
        """``POST /v1/crop``'s answer: ``CropResult.to_dict(extended=True)`` with the upload's name."""
        t0 = time.perf_counter()
        out = self.crop().result.to_dict(extended=True)
        out["image"] = self.image.name
        out["timings"]["total"] = round(time.perf_counter() - t0, 6)
        return out

    def crop_picture(self, fmt: str, strip_metadata: bool = False, strip_icc: bool = False) -> CropPicture:
        """The best crop (of the first ratio, with several) encoded as ``fmt``, with the upload's
        ICC profile and EXIF (orientation 1) unless stripped (see :mod:`clipcrop.io.metadata`);
        the whole picture when there is no crop. With a size, resized to the crop's
        ``output_size``: exactly the size asked for, or smaller (same shape) when the crop is
        smaller and ``upscale`` was not given."""
        from ..io.render import cut, encode_image, metadata_for

        cropped = self.crop()
        full, result = cropped.loaded, cropped.result
        if full.image.size != (full.width, full.height):  # reduced while decoding: cut from full
            full = decode_bytes(self.image.data, self.service.limits, name=self.image.name, reduce=False)
        box = result[0].box if len(result) else (0, 0, result.width, result.height)
        picture = cut(full.image, box, (result.width, result.height))
        if len(result) and result[0].output_size is not None:
            picture = resized(picture, result[0].output_size)
        meta = metadata_for(full, picture.size, strip_metadata=strip_metadata, strip_icc=strip_icc)
        data, media = encode_image(picture, fmt, metadata=meta)
        return CropPicture(data, media, result)


def resized(picture: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``picture`` at exactly ``size`` (width, height) pixels, resampled with Lanczos (the sharpest
    of Pillow's filters for photos, down or up); unchanged when it already has that size."""
    if picture.size == tuple(size):
        return picture
    return picture.resize((int(size[0]), int(size[1])), Image.Resampling.LANCZOS)


async def read_upload(upload: StarletteUploadFile, limit: int, what: str, default_name: str) -> Upload:
    """The upload's bytes (:class:`FileTooLargeError` past ``limit``) and display name."""
    data = await upload.read(limit + 1)
    if len(data) > limit:
        raise FileTooLargeError(f"{what}: upload is above the limit of {limit / 1e6:.1f} MB")
    name = (upload.filename or "").replace("\\", "/").rsplit("/", 1)[-1].strip()
    return Upload(data, name[:255] or default_name)


def is_absent(upload: Any) -> bool:
    """A browser sends an unpicked file input as an empty part with an empty file name."""
    return upload is None or (
        isinstance(upload, StarletteUploadFile) and not upload.filename and (upload.size or 0) == 0
    )


@dataclass(frozen=True)
class _FormFiles:
    """A form's image, raw text query and query image, checked for shape (not yet for content)."""

    image: StarletteUploadFile
    raw_query: str | None
    image_query: StarletteUploadFile | None


async def _form_files(request: Request, image: Any, image_query: Any, detect: bool) -> _FormFiles:
    """The form's parts that hold the image and its condition; ParameterError / QueryError when
    one is missing, doubled or of the wrong kind."""
    form = await request.form()  # already parsed by FastAPI: the raw values, empty strings included
    if is_absent(image) or not isinstance(image, StarletteUploadFile):
        raise ParameterError("image: an image file is required (multipart field 'image')")
    queries = form.getlist("query")
    if len(queries) > 1:
        raise ParameterError("query: give at most one text query")
    raw_query = queries[0] if queries else None
    if raw_query is not None and not isinstance(raw_query, str):
        raise ParameterError("query: must be a text field, not a file")
    if is_absent(image_query):
        image_query = None
    elif not isinstance(image_query, StarletteUploadFile):
        raise ParameterError("image_query: must be a file")
    validate_query_pair(raw_query, image_query)
    if detect and raw_query is None and image_query is None:
        raise QueryError("detect needs a text query (field 'query') or an image query (file 'image_query')")
    return _FormFiles(image, raw_query, image_query)


#: fields a crop form holds at most once (repeatable ones: aspect, keep, avoid_box, avoid)
SINGLE_FIELDS = ("top_k", "size", "upscale", "faces")


async def prepare_job(
    service: ServiceState,
    request: Request,
    image: Any,
    image_query: Any,
    top_k: Any,
    fields: CropFields | None,
) -> Job:
    """Check a crop form (``fields``: its options; None: a detect form, which needs a query and
    has its own top_k limit) and read its uploads; every parameter error is raised before the
    first byte is read."""
    predictor = service.require_predictor()
    detect = fields is None
    form = await _form_files(request, image, image_query, detect)
    raw = await request.form()
    for name in SINGLE_FIELDS:
        if len(raw.getlist(name)) > 1:
            raise ParameterError(f"{name}: give it at most once")
    query = validate_query(form.raw_query, service.limits)
    top_k = validate_top_k(top_k, MAX_DETECTIONS if detect else service.max_top_k(predictor))
    options = None if fields is None else fields.options(top_k)  # ParameterError now, before any work
    limit = service.limits.max_file_bytes
    upload = await read_upload(form.image, limit, "image", "upload")
    query_upload = None
    if form.image_query is not None:
        query_upload = await read_upload(form.image_query, limit, "image_query", "image_query")
    return Job(service, predictor, upload, query, query_upload, top_k, options)
