"""How a predictor is loaded, as one typed object converted once at each surface's edge.

The command line (flags), the HTTP service's worker processes and Ray batch workers
(``CLIPCROP_*`` environment variables) and evaluation all describe the model to load with the same
settings: which model, which backbone for a trained checkpoint, device, precision, quantisation
and the input limits. Each surface turns its own spelling into one :class:`ModelSettings` and
calls :meth:`ModelSettings.load`; nothing below it reads flags or the environment again. The
CLI's flags take their defaults from this class's fields, so the two cannot drift apart.

Importing this module is cheap (no torch): the CLI reads the defaults while building its parser.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .limits import Limits

if TYPE_CHECKING:
    from .predictor import ClipCrop

#: the model to load (a Hub id or folder), read by :meth:`ModelSettings.from_env` and, when no
#: model is named, by :meth:`clipcrop.predictor.ClipCrop.from_pretrained` itself
ENV_MODEL = "CLIPCROP_MODEL"
#: a trained checkpoint's backbone, instead of the one its config names
ENV_BACKBONE = "CLIPCROP_BACKBONE"
ENV_DEVICE = "CLIPCROP_DEVICE"
ENV_PRECISION = "CLIPCROP_PRECISION"
ENV_QUANTIZE = "CLIPCROP_QUANTIZE"
#: the precisions :meth:`clipcrop.predictor.ClipCrop.from_pretrained` runs the backbone in
PRECISIONS = ("fp32", "bf16", "fp16")
#: the quantisations it supports (CPU only)
QUANTIZATIONS = ("int8",)


@dataclass(frozen=True)
class ModelSettings:
    """Everything that decides which predictor is loaded, and how.

    Attributes:
        model: Hub id or folder: plain OWL-ViT/OWLv2 weights (training-free mode) or a trained
            ClipCrop checkpoint; None: ``$CLIPCROP_MODEL``, else ``google/owlvit-base-patch32``.
        backbone: for a trained checkpoint, the OWL-ViT/OWLv2 folder or Hub id to load instead of
            the one its ``config.json`` names (after moving it); None: the one it names.
        device: ``cpu``, ``cuda``, ``cuda:N`` or ``auto`` (a GPU when there is one).
        precision: one of :data:`PRECISIONS` (half precisions on GPU).
        quantize: None or one of :data:`QUANTIZATIONS` (dynamic int8 on CPU).
        limits: the input limits every surface enforces (image size, upload size, query length...).
        local_files_only: only the local Hugging Face cache (True), the Hub too (False); None:
            decided by :func:`clipcrop.modeling.hub_access.stay_local` (the cache when the Hub is
            unreachable).
    """

    model: str | None = None
    backbone: str | None = None
    device: str = "auto"
    precision: str = "fp32"
    quantize: str | None = None
    limits: Limits = field(default_factory=Limits)
    local_files_only: bool | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ModelSettings:
        """The settings the ``CLIPCROP_*`` variables describe (what ``clipcrop serve`` and
        ``clipcrop batch`` hand to their worker processes); an unset or empty variable keeps the
        field's default. Limits come from :meth:`Limits.from_env` (``CLIPCROP_MAX_MEGAPIXELS``...).

        Args:
            environ: the variables (default ``os.environ``; the limits always read ``os.environ``).

        Raises:
            ParameterError: a limit variable that is not a number.
        """
        env = os.environ if environ is None else environ
        defaults = cls()
        return cls(
            model=env.get(ENV_MODEL) or None,
            backbone=env.get(ENV_BACKBONE) or None,
            device=env.get(ENV_DEVICE) or defaults.device,
            precision=env.get(ENV_PRECISION) or defaults.precision,
            quantize=env.get(ENV_QUANTIZE) or None,
            limits=Limits.from_env(),
        )

    def to_env(self) -> dict[str, str]:
        """The ``CLIPCROP_*`` variables :meth:`from_env` reads back as these settings (unset fields
        left out; the limits are not included: they travel as their own variables)."""
        values = {
            ENV_MODEL: self.model,
            ENV_BACKBONE: self.backbone,
            ENV_DEVICE: self.device,
            ENV_PRECISION: self.precision,
            ENV_QUANTIZE: self.quantize,
        }
        return {name: str(value) for name, value in values.items() if value is not None}

    def replace(self, **changes: object) -> ModelSettings:
        return dataclasses.replace(self, **changes)

    def load(self) -> ClipCrop:
        """The predictor these settings describe (:meth:`clipcrop.predictor.ClipCrop.from_settings`).

        Raises:
            ModelLoadError: the model or its backbone cannot be loaded (the message says why).
            ParameterError: a setting that cannot work (an unknown precision, int8 on a GPU...).
        """
        from .predictor import ClipCrop

        return ClipCrop.from_settings(self)


__all__ = [
    "ENV_BACKBONE",
    "ENV_DEVICE",
    "ENV_MODEL",
    "ENV_PRECISION",
    "ENV_QUANTIZE",
    "PRECISIONS",
    "QUANTIZATIONS",
    "ModelSettings",
]
