"""``clipcrop serve [--host 127.0.0.1] [--port 8000] [--model NAME_OR_DIR] [--workers N] ...``

Runs the HTTP service and its web page (see :mod:`clipcrop.service`) with uvicorn. The model loads
in a background thread after the port is open: ``GET /ready`` answers 503 until it is loaded.

``--workers N`` starts N uvicorn worker processes, each building the app with the factory
:func:`clipcrop.service.app_from_env` and loading its own copy of the model (settings travel as
``CLIPCROP_*`` environment variables). Inside one process, concurrency comes from
``CLIPCROP_MAX_CONCURRENCY`` (requests run at once, default 1) and ``CLIPCROP_MAX_QUEUE``
(requests allowed to wait, default 16; past that the answer is 429).
"""

from __future__ import annotations

import argparse
import os

from .cli_crop import add_model_arguments

LOOPBACK = ("127.0.0.1", "::1", "localhost")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = (
        "environment: CLIPCROP_API_KEY (API key; preferred to --api-key, which other users can see\n"
        "in the process list), CLIPCROP_MAX_CONCURRENCY, CLIPCROP_MAX_QUEUE,\n"
        "CLIPCROP_REQUEST_TIMEOUT_S, CLIPCROP_MAX_QUERY_CHARS, CLIPCROP_MODEL"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, loopback only)")
    p.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="uvicorn worker processes, each loading the model (default 1)",
    )
    p.add_argument(
        "--max-upload-mb", type=float, metavar="MB", help="largest upload per image in MB (default 25)"
    )
    p.add_argument(
        "--api-key",
        metavar="KEY",
        help="require this key on /v1/* (Authorization: Bearer KEY or X-API-Key); default $CLIPCROP_API_KEY",
    )
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    add_model_arguments(p)


def run(args: argparse.Namespace) -> int:
    import logging

    import uvicorn

    from .errors import ParameterError
    from .service import ENV_API_KEY, ENV_DEVICE, ENV_PRECISION, ENV_QUANTIZE, app_from_env

    if args.workers < 1:
        raise ParameterError("--workers must be at least 1")
    if not 0 < args.port < 65536:
        raise ParameterError("--port must be between 1 and 65535")
    if args.max_upload_mb is not None and args.max_upload_mb <= 0:
        raise ParameterError("--max-upload-mb must be positive")
    if args.max_megapixels is not None and args.max_megapixels <= 0:
        raise ParameterError("--max-megapixels must be positive")
    # every setting goes through the environment, so that worker processes see the same
    env = {
        "CLIPCROP_MODEL": args.model,
        "CLIPCROP_MAX_UPLOAD_MB": None if args.max_upload_mb is None else repr(args.max_upload_mb),
        "CLIPCROP_MAX_MEGAPIXELS": None if args.max_megapixels is None else repr(args.max_megapixels),
        ENV_DEVICE: args.device,
        ENV_PRECISION: args.precision,
        ENV_QUANTIZE: args.quantize,
        ENV_API_KEY: args.api_key,
    }
    for name, value in env.items():
        if value is not None:
            os.environ[name] = value
    log = logging.getLogger("clipcrop.serve")
    if args.host not in LOOPBACK and not os.environ.get(ENV_API_KEY):
        log.warning("listening on %s without an API key: anyone who can reach it may use it", args.host)
    print(
        f"clipcrop: serving on http://{_url_host(args.host)}:{args.port}/ "
        f"({args.workers} worker{'s' if args.workers > 1 else ''}; "
        f"API key {'required' if os.environ.get(ENV_API_KEY) else 'off'})",
        flush=True,
    )
    common = dict(
        host=args.host,
        port=args.port,
        log_level=args.log_level,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    if args.workers > 1:
        uvicorn.run("clipcrop.service:app_from_env", factory=True, workers=args.workers, **common)
    else:
        uvicorn.run(app_from_env(), **common)
    return 0


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
