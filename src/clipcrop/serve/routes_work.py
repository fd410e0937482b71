"""The service's work routes: ``POST /v1/crop`` (JSON), ``/v1/crop/image`` (the best crop itself)
and ``/v1/detect`` (OWL-ViT's detections). Each checks its form (:func:`~clipcrop.serve.jobs.prepare_job`),
then runs in the work queue within ``limits.request_timeout_s``."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.params import Depends
from fastapi.responses import JSONResponse, Response

from .info import DEFAULT_TOP_K
from .jobs import CropFields, prepare_job
from .schema import (
    WORK_ERRORS,
    AspectField,
    AvoidBoxField,
    AvoidField,
    CropResponse,
    DetectQueryField,
    DetectResponse,
    DetectTopKField,
    FacesField,
    FormatField,
    ImageField,
    KeepField,
    QueryField,
    QueryImageField,
    SizeField,
    StripIccField,
    StripMetadataField,
    TopKField,
    UpscaleField,
)
from .state import ServiceState

_BINARY = {"schema": {"type": "string", "format": "binary"}}
PICTURE_RESPONSES = {
    200: {
        "description": "the best crop (of the first ratio given), at output_size when a size was asked for; "
        "headers X-Crop-Box (x0,y0,x1,y1), X-Crop-Score and X-Crop-Aspect (W:H, when a ratio was asked for)",
        "content": {"image/jpeg": _BINARY, "image/png": _BINARY, "image/webp": _BINARY},
    },
    **WORK_ERRORS,
}


def add_work_routes(app: FastAPI, service: ServiceState, security: list[Depends]) -> None:
    """The three work routes; ``security``: the API key dependencies (for the OpenAPI page)."""

    def timeout() -> float:
        return service.limits.request_timeout_s

    @app.post("/v1/crop", response_model=CropResponse, summary="Ranked crops of an uploaded image (JSON)",
              tags=["crop"], responses=WORK_ERRORS, dependencies=security)  # fmt: skip
    async def crop(
        request: Request,
        image: ImageField,
        query: QueryField = None,
        image_query: QueryImageField = None,
        top_k: TopKField = DEFAULT_TOP_K,
        aspect: AspectField = None,
        size: SizeField = None,
        upscale: UpscaleField = False,
        keep: KeepField = None,
        avoid_box: AvoidBoxField = None,
        avoid: AvoidField = None,
        faces: FacesField = False,
    ) -> JSONResponse:
        fields = CropFields(aspect, size, upscale, keep, avoid_box, avoid, faces)
        job = await prepare_job(service, request, image, image_query, top_k, fields)
        return JSONResponse(await service.queue.run(job.crop_json, timeout()))

    @app.post("/v1/crop/image", summary="The best crop itself, cut at full resolution (JPEG, PNG or WebP)",
              tags=["crop"], response_class=Response, responses=PICTURE_RESPONSES,
              dependencies=security)  # fmt: skip
    async def crop_image(
        request: Request,
        image: ImageField,
        query: QueryField = None,
        image_query: QueryImageField = None,
        top_k: TopKField = DEFAULT_TOP_K,
        aspect: AspectField = None,
        size: SizeField = None,
        upscale: UpscaleField = False,
        keep: KeepField = None,
        avoid_box: AvoidBoxField = None,
        avoid: AvoidField = None,
        faces: FacesField = False,
        format: FormatField = "jpeg",
        strip_metadata: StripMetadataField = False,
        strip_icc: StripIccField = False,
    ) -> Response:
        fields = CropFields(aspect, size, upscale, keep, avoid_box, avoid, faces)
        job = await prepare_job(service, request, image, image_query, top_k, fields)
        picture = await service.queue.run(
            lambda: job.crop_picture(format, strip_metadata, strip_icc), timeout()
        )
        headers = {"Cache-Control": "no-store"}
        if len(picture.result):
            best = picture.result[0]
            headers["X-Crop-Box"] = ",".join(str(v) for v in best.box)
            headers["X-Crop-Score"] = f"{best.score:.6f}"
            if best.aspect is not None:
                headers["X-Crop-Aspect"] = best.aspect
        return Response(picture.data, media_type=picture.media_type, headers=headers)

    @app.post("/v1/detect", response_model=DetectResponse, tags=["detect"], responses=WORK_ERRORS,
              summary="OWL-ViT's detections in an uploaded image for a text or image query (JSON)",
              dependencies=security)  # fmt: skip
    async def detect(
        request: Request,
        image: ImageField,
        query: DetectQueryField = None,
        image_query: QueryImageField = None,
        top_k: DetectTopKField = DEFAULT_TOP_K,
    ) -> JSONResponse:
        job = await prepare_job(service, request, image, image_query, top_k, None)
        return JSONResponse(await service.queue.run(job.detect_json, timeout()))
