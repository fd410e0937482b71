"""Library calls print no progress bars: transformers' and huggingface_hub's are off while ClipCrop
loads or saves models for its caller.

A Python program that calls ``ClipCrop.from_pretrained`` gets no "Loading weights" bar on its
terminal (a web service's log, a notebook cell): progress is for people watching a command, so
only the ``clipcrop`` command draws bars, on stderr, for work it does itself (images cropped).
:func:`library_progress_off` turns both libraries' bars off for a block and puts their switches
back as they were afterwards (they are process-wide, so a bar another thread starts meanwhile is
not drawn either).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def library_progress_off() -> Iterator[None]:
    """Turn transformers' and huggingface_hub's progress bars off inside the block, then restore them."""
    from huggingface_hub import utils as hub_utils
    from transformers.utils import logging as hf_logging

    transformers_on = hf_logging.is_progress_bar_enabled()
    hub_on = not hub_utils.are_progress_bars_disabled()
    hf_logging.disable_progress_bar()  # both: transformers' switch also flips huggingface_hub's
    try:
        yield
    finally:
        if transformers_on:
            hf_logging.enable_progress_bar()
        if hub_on:
            hub_utils.enable_progress_bars()
        else:
            hub_utils.disable_progress_bars()


__all__ = ["library_progress_off"]
