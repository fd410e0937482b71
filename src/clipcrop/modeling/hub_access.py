"""Whether the Hugging Face Hub can be reached, asked once per process before the first download.

Without ``HF_HUB_OFFLINE``, ``huggingface_hub`` retries every unreachable request five times with
back-off (about 30 s per file, each retry logged twice) before it falls back to the local cache.
On a machine without internet access that turns the first ``clipcrop crop`` into half a minute of
warnings and a vague error. So the loaders ask :func:`stay_local` first: one ``HEAD`` request to
the configured endpoint (``HF_ENDPOINT``, default https://huggingface.co) through
``huggingface_hub``'s own HTTP session (its proxies and certificates), a few seconds at most, no
retry. If nothing answers, the model is loaded with ``local_files_only=True``: a cached model
loads at once, a missing one fails at once with :func:`unreachable_message`, which says how to
download it and how to try ClipCrop without weights.

Any HTTP answer, even an error status, counts as reachable: only the transport matters here.
The answer is remembered for the life of the process (the network rarely comes back between two
model loads, and a long-running service loads once).
"""

from __future__ import annotations

import logging
import os
import threading

from ..model_source import looks_local

logger = logging.getLogger(__name__)

#: seconds the probe waits for the endpoint to answer
PROBE_TIMEOUT_S = 3.0
_TRUE = ("1", "true", "yes", "on")

_lock = threading.Lock()
_reachable: dict[str, bool] = {}  # endpoint -> answer, once per process


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` (or ``TRANSFORMERS_OFFLINE``) says to use the local cache only."""
    return any(
        os.environ.get(v, "").strip().lower() in _TRUE for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def hub_endpoint() -> str:
    """The Hub endpoint ``huggingface_hub`` uses (``HF_ENDPOINT`` or its default)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def hub_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """One ``HEAD`` request to the endpoint, at most ``timeout`` seconds; remembered per process."""
    endpoint = hub_endpoint()
    with _lock:
        if endpoint in _reachable:
            return _reachable[endpoint]
        try:
            from huggingface_hub.utils import get_session

            get_session().head(endpoint, timeout=timeout)
            answer = True
        except Exception as exc:  # noqa: BLE001 - DNS, refused, timeout, TLS, proxy: all unreachable
            logger.info("the Hugging Face Hub at %s cannot be reached (%s)", endpoint, exc)
            answer = False
        _reachable[endpoint] = answer
        return answer


def hub_was_unreachable() -> bool:
    """True when this process probed the current endpoint and nothing answered."""
    try:
        endpoint = hub_endpoint()
    except Exception:  # noqa: BLE001 - huggingface_hub missing or broken: nothing was probed
        return False
    with _lock:
        return _reachable.get(endpoint) is False


def stay_local(name: str, local_files_only: bool | None) -> bool | None:
    """The ``local_files_only`` to load ``name`` with.

    The caller's choice when it made one, and for local folders or in offline mode (nothing to
    ask); otherwise ``True`` when the Hub cannot be reached, so the cache is used at once instead
    of after half a minute of retries, and ``None`` (download as usual) when it can.
    """
    if local_files_only is not None or looks_local(name) or hub_offline():
        return local_files_only
    return None if hub_reachable() else True


def download_command(name: str) -> str:
    """The command of the installed ``huggingface_hub`` that downloads ``name`` into a folder
    (``hf`` since 0.34; ``huggingface-cli`` before, which newer versions no longer have)."""
    try:
        from huggingface_hub import __version__ as version

        major, minor = (int(p) for p in version.split(".")[:2])
        modern = (major, minor) >= (0, 34)
    except (ImportError, ValueError):
        modern = True
    tool = "hf" if modern else "huggingface-cli"
    return f"{tool} download {name} --local-dir DIR"


def _what_to_do(name: str) -> str:
    return (
        f"Pass a local folder with --model DIR (or CLIPCROP_MODEL=DIR): on a machine that reaches the Hub, "
        f"run `{download_command(name)}` and copy DIR here. To try ClipCrop without weights "
        "(meaningless crops, every surface works), make a random model with "
        "`clipcrop make-random-backbone --out DIR --tokenizer TOKENIZER_DIR` "
        "(TOKENIZER_DIR: CLIP's vocab.json and merges.txt)"
    )


def unreachable_message(name: str) -> str:
    """One line: the Hub cannot be reached and ``name`` is not cached; what to do instead."""
    endpoint = hub_endpoint()
    return (
        f"cannot load {name!r}: the Hugging Face Hub ({endpoint}) cannot be reached and the model is "
        f"not in the local cache. {_what_to_do(name)}"
    )


def offline_message(name: str) -> str:
    """One line: offline mode is on and ``name`` is not cached; what to do instead."""
    return (
        f"cannot load {name!r}: HF_HUB_OFFLINE is set and the model is not in the local Hugging Face "
        f"cache. {_what_to_do(name)}"
    )
