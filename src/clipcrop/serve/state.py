"""What one service app holds: the model (loaded in a background thread), its limits, the work
queue and the API key."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Union

from ..errors import ClipCropError
from ..limits import Limits
from .errors import NotReadyError
from .queue import WorkQueue

if TYPE_CHECKING:  # the predictor imports torch: only the loader thread pays for it
    from ..predictor import ClipCrop

logger = logging.getLogger(__name__)

#: room for the form fields and multipart headers next to the two files
FORM_OVERHEAD_BYTES = 64 * 1024

#: a loaded predictor, or a no-argument callable that loads one
PredictorOrLoader = Union["ClipCrop", Callable[[], "ClipCrop"]]


class ServiceState:
    """The model, limits, queue and API key of one app (``app.state.clipcrop``).

    ``predictor`` is None until the loader returns; ``load_error`` says why when it failed.
    """

    def __init__(
        self,
        predictor_or_loader: PredictorOrLoader,
        limits: Limits | None,
        api_key: str | None,
        on_load_error: Callable[[str], None] | None = None,
    ) -> None:
        self.on_load_error = on_load_error
        self.loader: Callable[[], ClipCrop] | None = None
        self.predictor: ClipCrop | None = None
        if callable(predictor_or_loader) and not hasattr(predictor_or_loader, "crop"):
            self.loader = predictor_or_loader
        else:
            self.predictor = predictor_or_loader  # type: ignore[assignment]
        if limits is None:
            limits = getattr(self.predictor, "limits", None) or Limits.from_env()
        self.limits = limits
        self.api_key = api_key.encode("utf-8") if api_key else None
        #: a form holds at most two files of ``max_file_bytes`` (image and image_query)
        self.max_body_bytes = 2 * limits.max_file_bytes + FORM_OVERHEAD_BYTES
        self.queue = WorkQueue(limits.max_concurrency, limits.max_queue)
        self.load_error: str | None = None
        self._load_thread: threading.Thread | None = None

    def start_loading(self) -> None:
        """Call the loader in a background thread (once; nothing to do for a ready predictor)."""
        if self.predictor is not None or self.loader is None or self._load_thread is not None:
            return
        self._load_thread = threading.Thread(target=self._load, name="clipcrop-load", daemon=True)
        self._load_thread.start()

    def _load(self) -> None:
        assert self.loader is not None  # start_loading checked it
        t0 = time.perf_counter()
        try:
            predictor = self.loader()
        except Exception as exc:  # noqa: BLE001 - reported by /ready and on_load_error, logged here
            self._failed(str(exc) if isinstance(exc, ClipCropError) else f"{type(exc).__name__}: {exc}")
            return
        if predictor is None:
            self._failed("the model loader returned nothing")
            return
        self.predictor = predictor
        logger.info("model ready after %.1f s", time.perf_counter() - t0)

    def _failed(self, message: str) -> None:
        """The model cannot load: /ready says why from now on, and ``on_load_error`` (``clipcrop
        serve``: stop the server and exit non-zero) is told; without one, the log says it."""
        self.load_error = message
        if self.on_load_error is None:
            logger.error("model failed to load: %s", message)
            return
        logger.info("model failed to load: %s", message)
        self.on_load_error(message)

    def require_predictor(self) -> ClipCrop:
        """The loaded predictor, or :class:`NotReadyError` (503) while loading or after a failure."""
        if self.predictor is None:
            if self.load_error:
                raise NotReadyError(f"the model failed to load: {self.load_error}")
            raise NotReadyError("the model is still loading; retry in a few seconds")
        return self.predictor

    def max_top_k(self, predictor: ClipCrop) -> int:
        """The model's number of crops, capped by ``limits.max_top_k`` when that is set."""
        m = int(predictor.max_top_k)
        return min(m, self.limits.max_top_k) if self.limits.max_top_k else m

    def public_model_name(self, predictor: ClipCrop) -> str:
        """A Hub id as is; a local folder by its last part only (/ready is open: no server paths)."""
        name = str(getattr(predictor, "name", ""))
        path = Path(name)
        return path.name if path.is_absolute() or path.exists() else name
