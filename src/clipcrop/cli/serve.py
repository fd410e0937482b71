"""``clipcrop serve [--host 127.0.0.1] [--port 8000] [--model NAME_OR_DIR] [--workers N] ...``

Runs the HTTP service and its web page (see :mod:`clipcrop.serve.app`) with uvicorn. The model loads
in a background thread after the port is open: ``GET /ready`` answers 503 until it is loaded. A
model that cannot load stops the server: ``serve`` exits with status 1 and the reason in one
``clipcrop: error:`` line (an orchestrator must not see a live server that will never be ready).

``--workers N`` starts N uvicorn worker processes, each building the app with the factory
:func:`clipcrop.serve.app.app_from_env` and loading its own copy of the model (settings travel as
``CLIPCROP_*`` environment variables). Inside one process, concurrency comes from
``CLIPCROP_MAX_CONCURRENCY`` (requests run at once, default 1) and ``CLIPCROP_MAX_QUEUE``
(requests allowed to wait, default 16; past that the answer is 429).
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

from .crop import add_model_arguments, model_settings

LOOPBACK = ("127.0.0.1", "::1", "localhost")
#: where a worker process (``--workers N``) leaves the load error for the parent to report
ENV_ERROR_FILE = "CLIPCROP_SERVE_ERROR_FILE"
#: a worker's exit status that makes uvicorn's supervisor stop instead of restarting it
STARTUP_FAILURE = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.epilog = (
        "environment: CLIPCROP_API_KEY (API key; preferred to --api-key, which other users can see\n"
        "in the process list), CLIPCROP_MAX_CONCURRENCY, CLIPCROP_MAX_QUEUE,\n"
        "CLIPCROP_REQUEST_TIMEOUT_S, CLIPCROP_MAX_QUERY_CHARS, CLIPCROP_MODEL, CLIPCROP_BACKBONE"
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

    from ..serve.app import ENV_API_KEY

    # flags were checked by cli_checks.check_arguments; every setting goes through the environment,
    # so that worker processes see the same (ModelSettings.from_env reads them back there)
    env = {
        **model_settings(args).to_env(),
        "CLIPCROP_MAX_UPLOAD_MB": None if args.max_upload_mb is None else repr(args.max_upload_mb),
        "CLIPCROP_MAX_MEGAPIXELS": None if args.max_megapixels is None else repr(args.max_megapixels),
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
        return _serve_workers(args.workers, common)
    return _serve_one(common)


def _serve_one(common: dict) -> int:
    """One process: the loader's failure sets ``should_exit``, then the error is raised here."""
    import uvicorn

    from ..errors import ModelLoadError
    from ..serve.app import app_from_env

    server: uvicorn.Server | None = None

    def stop(_message: str) -> None:
        if server is not None:
            server.should_exit = True

    app = app_from_env(on_load_error=stop)
    server = uvicorn.Server(uvicorn.Config(app, **common))
    server.run()
    error = app.state.clipcrop.load_error
    if error:
        raise ModelLoadError(error)
    return 0 if server.started else 1  # not started: uvicorn said why (port in use, ...)


def _serve_workers(workers: int, common: dict) -> int:
    """Worker processes: a worker whose model cannot load writes the error to a file and exits
    with uvicorn's startup-failure status, which stops the supervisor; the error is raised here."""
    import uvicorn

    from ..errors import ModelLoadError

    fd, error_file = tempfile.mkstemp(prefix="clipcrop-serve-", suffix=".err")
    os.close(fd)
    os.environ[ENV_ERROR_FILE] = error_file
    try:
        uvicorn.run("clipcrop.cli.serve:worker_app", factory=True, workers=workers, **common)
        error = Path(error_file).read_text(encoding="utf-8").strip()
    finally:
        os.environ.pop(ENV_ERROR_FILE, None)
        Path(error_file).unlink(missing_ok=True)
    if error:
        raise ModelLoadError(error)
    return 0


def worker_app():
    """App factory of ``serve --workers N``'s processes (:func:`clipcrop.serve.app.app_from_env`,
    plus: a model that cannot load ends the worker with :data:`STARTUP_FAILURE`)."""
    from ..serve.app import app_from_env

    return app_from_env(on_load_error=_worker_failed)


def _worker_failed(message: str) -> None:
    error_file = os.environ.get(ENV_ERROR_FILE)
    if error_file:
        with open(error_file, "w", encoding="utf-8") as fh:
            fh.write(message)
    # from the loader thread: end the whole worker now; the supervisor sees STARTUP_FAILURE and
    # stops the other workers and itself instead of restarting this one forever
    os._exit(STARTUP_FAILURE)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
