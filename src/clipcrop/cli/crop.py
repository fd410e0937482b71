"""``clipcrop crop IMAGE... [--query TEXT | --image-query PATH] ...``

Prints one JSON object per image with ``--json`` (stdout, one per line), otherwise a short table;
logs, progress and error lines go to stderr. Images are decoded in a background thread ahead of
the model; ``--batch-size`` batches images through the backbone; the query's embeddings are
computed once per run (the predictor caches them).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from ..model_source import DEFAULT_BACKBONE
from ..settings import ENV_MODEL, PRECISIONS, QUANTIZATIONS, ModelSettings
from .progress import ProgressBar


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files, folders (recursive) or globs")
    cond = p.add_mutually_exclusive_group()
    cond.add_argument("--query", "-q", help="what the crop should show, in words")
    cond.add_argument("--image-query", metavar="PATH", help="a reference image of what the crop should show")
    p.add_argument(
        "--top-k", "-k", type=int, default=5, metavar="N", help="crops per image and ratio (default 5)"
    )
    add_crop_option_arguments(p)
    add_model_arguments(p)
    p.add_argument(
        "--out",
        metavar="DIR",
        help="write each crop as DIR/<path>_crop<k>.jpg (<path>: the image's path below the folder "
        "given, without extension; with several --aspect ratios DIR/<path>_<W>x<H>-crop<k>.jpg; "
        "names never collide); at exactly --size when given",
    )
    p.add_argument(
        "--overlay",
        action="store_true",
        help="also write DIR/<path>_overlay.jpg with the ranked boxes and, dashed, the priors (needs --out)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace pictures that exist in DIR (default: refuse, before any work)",
    )
    add_metadata_arguments(p)
    p.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    p.add_argument(
        "--batch-size", type=int, default=1, metavar="N", help="images per backbone call (default 1)"
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--profile", action="store_true", help="print a per-stage time breakdown on stderr")


def add_crop_option_arguments(p: argparse.ArgumentParser, *, every: str = "") -> None:
    """The flags of :class:`~clipcrop.crop_options.CropOptions` (shared with ``batch``, whose
    manifest lines may set each for themselves; ``every`` words that in the help)."""
    p.add_argument(
        "--aspect",
        metavar="W:H[,W:H...]",
        help=f"exact aspect ratio of every crop{every}, e.g. 1:1 or 16:9; several (1:1,4:5,16:9): "
        "top-k crops for each, grouped in that order, the image encoded once",
    )
    p.add_argument(
        "--size",
        metavar="WxH",
        help="write crops at exactly this many pixels (e.g. 1080x1350; the ratio follows unless "
        "--aspect is given), never enlarged unless --upscale",
    )
    p.add_argument(
        "--upscale", action="store_true", help="let --size enlarge a crop smaller than it (default: never)"
    )
    p.add_argument(
        "--keep",
        action="append",
        default=[],
        metavar="x0,y0,x1,y1[,w]",
        help="a region (pixels of the upright image) crops should hold whole, weight w (default 1); repeatable",
    )
    p.add_argument(
        "--avoid-box",
        action="append",
        default=[],
        metavar="x0,y0,x1,y1[,w]",
        help="a region crops should leave out, weight w (default 1); repeatable",
    )
    p.add_argument(
        "--avoid",
        action="append",
        default=[],
        metavar="TEXT",
        help="leave out what OWL-ViT finds for TEXT (e.g. 'a watermark'); repeatable",
    )
    p.add_argument(
        "--faces",
        action="store_true",
        help="keep the faces OpenCV's detector finds whole (needs clipcrop[faces])",
    )


def crop_options(args: argparse.Namespace):
    """The crop option flags as :class:`~clipcrop.crop_options.CropOptions` (its ``build`` is the
    one place they are checked; torch-free). ``--faces`` without OpenCV is refused here too, so
    that the error comes before the model loads.

    Raises:
        ParameterError: a bad value (the CLI's usage error).
    """
    import importlib.util

    from ..crop_options import CropOptions
    from ..errors import ParameterError

    options = CropOptions.build(
        top_k=args.top_k,
        aspect_ratio=args.aspect,
        size=args.size,
        upscale=args.upscale,
        keep=args.keep or (),
        avoid_box=args.avoid_box or (),
        avoid=args.avoid or (),
        faces=args.faces,
    )
    if options.faces and importlib.util.find_spec("cv2") is None:
        raise ParameterError(
            "--faces needs OpenCV's face detector: pip install 'clipcrop[faces]' (opencv-python-headless<5)"
        )
    return options


def add_metadata_arguments(p: argparse.ArgumentParser) -> None:
    """What written pictures carry of the source (shared with ``batch``): ICC profile and EXIF by default."""
    p.add_argument(
        "--strip-metadata",
        action="store_true",
        help="write pictures without the source's EXIF (camera, date, GPS, copyright); the ICC colour profile stays",
    )
    p.add_argument(
        "--strip-icc", action="store_true", help="write pictures without the source's ICC colour profile"
    )


def check(args: argparse.Namespace) -> None:
    """crop's own checks, run by :func:`clipcrop.cli.checks.check_arguments` before anything heavy.

    The crop options become one :class:`~clipcrop.crop_options.CropOptions` (``args._options``).
    ``--overlay`` and the strip switches need ``--out`` (nothing is written into the current
    folder unasked; ``--size`` alone still gives each crop's ``output_size`` in the JSON); the output names are planned (``args._stems``) and, unless
    ``--overwrite``, a picture that exists already is refused now rather than after the model has run.
    """
    from ..errors import ParameterError

    args._stems = {}
    args._options = crop_options(args)
    if not args.out:
        for flag, given in (
            ("--overlay", args.overlay),
            ("--strip-metadata", args.strip_metadata),
            ("--strip-icc", args.strip_icc),
        ):
            if given:
                raise ParameterError(f"{flag} needs --out DIR, the folder pictures are written to")
        return
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ParameterError(f"--out {args.out}: is a file; give the folder to write pictures to")
    from ..io.inputs import expand_inputs
    from ..io.output_names import output_stems, overlay_path, planned_crop_paths

    items = [it for it in (getattr(args, "_inputs", None) or expand_inputs(args.images)) if it.error is None]
    stems = output_stems([it.path for it in items], [it.folder for it in items])
    args._stems = {it.path: stem for it, stem in zip(items, stems, strict=True)}
    if args.overwrite:
        return
    labels = [label for label, _ in args._options.aspects]
    targets = [p for stem in stems for p in planned_crop_paths(out, stem, labels, args.top_k)]
    targets += [overlay_path(out, stem) for stem in stems] if args.overlay else []
    _refuse_existing(targets)


def _refuse_existing(targets: list[Path]) -> None:
    """ParameterError naming the first of ``targets`` that exists (one listing per folder)."""
    from ..errors import OutputExistsError

    listings: dict[Path, set[str]] = {}
    found = []
    for path in targets:
        if path.parent not in listings:
            try:
                listings[path.parent] = set(os.listdir(path.parent))
            except OSError:  # missing folder: nothing in it
                listings[path.parent] = set()
        if path.name in listings[path.parent]:
            found.append(path)
    if found:
        more = f" (and {len(found) - 1} more)" if len(found) > 1 else ""
        raise OutputExistsError(
            f"{found[0]} already exists{more}; pass --overwrite to replace, or choose another --out"
        )


def add_model_arguments(
    p: argparse.ArgumentParser,
    *,
    defaults: ModelSettings | None = None,
    device_help: str = "cpu, cuda, cuda:N or auto",
) -> None:
    """Model flags shared by every command that loads a predictor; their defaults are
    :class:`~clipcrop.settings.ModelSettings`' (``defaults``: a command's own, e.g. batch's device)."""
    d = defaults or ModelSettings()
    p.add_argument(
        "--model",
        "-m",
        default=d.model,
        metavar="NAME_OR_DIR",
        help="Hub id or folder (OWL-ViT weights or a ClipCrop checkpoint); "
        f"default ${ENV_MODEL} or {DEFAULT_BACKBONE}",
    )
    p.add_argument(
        "--backbone",
        default=d.backbone,
        metavar="DIR_OR_HUB_ID",
        help="for a trained ClipCrop checkpoint: load this OWL-ViT/OWLv2 folder or Hub id as its "
        "backbone instead of the one its config.json names (e.g. after moving that folder)",
    )
    p.add_argument("--device", default=d.device, help=f"{device_help} (default {d.device})")
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=d.precision,
        help=f"backbone precision (half precisions on GPU; default {d.precision})",
    )
    p.add_argument(
        "--quantize",
        choices=QUANTIZATIONS,
        default=d.quantize,
        help="CPU int8 dynamic quantisation of the backbone",
    )
    p.add_argument(
        "--max-megapixels",
        type=float,
        metavar="MP",
        help=f"largest image accepted (default {d.limits.max_pixels / 1e6:g})",
    )


def model_settings(args: argparse.Namespace) -> ModelSettings:
    """The model flags as :class:`~clipcrop.settings.ModelSettings` (the only place they become one;
    limits: the ``CLIPCROP_*`` variables, then ``--max-megapixels``)."""
    from ..limits import Limits

    limits = Limits.from_env(max_pixels=int(args.max_megapixels * 1e6) if args.max_megapixels else None)
    return ModelSettings(
        model=args.model,
        backbone=getattr(args, "backbone", None),
        device=args.device,
        precision=args.precision,
        quantize=args.quantize,
        limits=limits,
    )


def load_predictor(args: argparse.Namespace):
    """The shared predictor the model flags describe. A checkpoint whose backbone is missing is
    reported with the flag that points at another copy."""
    from ..errors import BackboneLoadError

    try:
        return model_settings(args).load()
    except BackboneLoadError as exc:
        raise exc.with_parameter("--backbone DIR_OR_HUB_ID") from exc


def run(args: argparse.Namespace) -> int:
    from ..errors import ClipCropError
    from ..io.inputs import expand_inputs

    # the flags were checked by cli_checks.check_arguments (before this import of anything heavy),
    # which also expanded the IMAGE arguments
    items = getattr(args, "_inputs", None) or expand_inputs(args.images)
    t_start = time.perf_counter()
    if args.query:
        from ..modeling.keywords import warm_up_in_background

        warm_up_in_background()  # spaCy loads while the backbone loads
    if not hasattr(args, "_stems"):  # run() called without the CLI's checks
        check(args)
    cc = load_predictor(args)
    t_loaded = time.perf_counter()
    condition = cc.prepare_condition(args.query, args.image_query)
    failed = 0
    # the condition is prepared once per run: count its stages once, not once per image
    stage_totals: dict[str, float] = dict(condition.timings)
    progress = ProgressBar(
        "cropping", len(items), enabled=not args.quiet and len(items) > 1 and sys.stderr.isatty()
    )
    with progress:
        decode_seconds = [0.0]
        for item, loaded, error in _prefetch(items, cc.limits, args.batch_size, decode_seconds):
            if error is not None:
                failed += 1
                _emit_error(args, item, error, condition)
                progress.advance()
                continue
            try:
                for encoded in cc.encode_batch(loaded):
                    result = cc.crop_encoded(encoded, condition, options=args._options)
                    for k, v in result.timings.items():
                        if k not in condition.timings:
                            stage_totals[k] = stage_totals.get(k, 0.0) + v
                    _emit(args, result)
                    if args.out:
                        _write_pictures(result, args._stems[result.image], args, cc.limits)
                    progress.advance()
            except ClipCropError as exc:
                for li in loaded:
                    failed += 1
                    _emit_error(args, li.name, str(exc), condition)
                    progress.advance()
    if args.profile:
        stage_totals["decode"] = decode_seconds[0]  # in the background thread, overlapping the model
        _print_profile(stage_totals, len(items) - failed, t_loaded - t_start, time.perf_counter() - t_loaded)
    return 1 if failed else 0


def _prefetch(items, limits, batch_size: int, decode_seconds: list[float] | None = None):
    """Yield ``(item, [LoadedImage...], error)`` with decoding in a background thread.

    Batches group up to ``batch_size`` readable images; an unreadable one is yielded alone with
    its error so that the others still go through.
    """
    import queue
    import threading

    from ..errors import ClipCropError
    from ..io.images import load_image

    q: queue.Queue = queue.Queue(maxsize=max(4, 2 * batch_size))
    done = object()
    stop = threading.Event()

    def worker() -> None:
        batch: list = []
        for item in items:
            if stop.is_set():
                break
            if item.error is not None:
                q.put((item.path, None, item.error))
                continue
            try:
                t0 = time.perf_counter()
                batch.append(load_image(item.path, limits))
                if decode_seconds is not None:
                    decode_seconds[0] += time.perf_counter() - t0
            except ClipCropError as exc:
                q.put((item.path, None, str(exc)))
                continue
            except Exception as exc:  # noqa: BLE001 - never let one file kill the run
                q.put((item.path, None, f"{item.path}: {type(exc).__name__}: {exc}"))
                continue
            if len(batch) >= batch_size:
                q.put((None, batch, None))
                batch = []
        if batch:
            q.put((None, batch, None))
        q.put(done)

    thread = threading.Thread(target=worker, name="clipcrop-decode", daemon=True)
    thread.start()
    try:
        while True:
            got = q.get()
            if got is done:
                break
            yield got
    finally:
        stop.set()


def _emit(args, result) -> None:
    if args.json:
        print(json.dumps(result.to_dict()), flush=True)
        return
    cond = (
        f"query {result.query!r}"
        if result.query
        else (f"image query {result.image_query}" if result.image_query else "no condition")
    )
    print(f"{result.image}  {result.width}x{result.height}  {cond}  [{result.mode}]")
    for prior in result.priors:
        print(f"  {prior.kind:<6} {','.join(f'{v:.0f}' for v in prior.box)}  weight {prior.weight:g}")
    for name, crop in zip(crop_names(result), result, strict=True):
        x0, y0, x1, y1 = crop.box
        size = f"  -> {crop.output_size[0]}x{crop.output_size[1]}" if crop.output_size else ""
        print(f"  {name:>2}  score {crop.score:.3f}  box {x0},{y0},{x1},{y1}  ({x1 - x0}x{y1 - y0}){size}")
    sys.stdout.flush()


def crop_names(result) -> list[str]:
    """Each crop's name in tables and overlays: its rank, or ``"4:5 #1"`` with several ratios."""
    from ..io.render import crop_names as names

    return names([c.aspect for c in result], several=len(result.aspects) > 1)


def _emit_error(args, image: str, message: str, condition) -> None:
    """A failed image: with ``--json`` its object, with the condition's cleaned query like the
    success lines (:func:`~clipcrop.io.result_lines.failed_crop_line`); the error line on stderr."""
    if args.json:
        from ..io.result_lines import failed_crop_line

        line = failed_crop_line(image, condition.query, message, image_query=condition.image_query)
        print(json.dumps(line), flush=True)
    print(f"clipcrop: error: {message}", file=sys.stderr, flush=True)


def _write_pictures(result, stem, args, limits) -> None:
    """Crops at full resolution (decoded again without reduction), resized to their
    ``output_size`` when ``--size`` was given (Lanczos), and the overlay with the priors, with the
    source's ICC profile and EXIF (orientation 1) unless stripped; never replacing a file unless
    ``--overwrite`` (a file that appeared since the check is this image's error)."""
    from ..io.images import load_image
    from ..io.output_names import crop_paths, overlay_path
    from ..io.render import at_output_size, cut, draw_overlay, metadata_for, save_atomic

    full = load_image(result.image, limits, reduce=False)
    size = (result.width, result.height)
    flags = {"strip_metadata": args.strip_metadata, "strip_icc": args.strip_icc}
    paths = crop_paths(args.out, stem, [c.aspect for c in result], several=len(result.aspects) > 1)
    pictures = [
        (at_output_size(cut(full.image, c.box, size), c.output_size), path)
        for c, path in zip(result, paths, strict=True)
    ]
    if args.overlay:
        overlay = draw_overlay(
            full.image,
            [c.box for c in result],
            size,
            [c.score for c in result],
            names=crop_names(result),
            priors=result.priors,
        )
        pictures.append((overlay, overlay_path(args.out, stem)))
    for picture, path in pictures:
        meta = metadata_for(full, picture.size, **flags)
        save_atomic(picture, path, metadata=meta, overwrite=args.overwrite)


def _print_profile(totals: dict[str, float], n: int, load_s: float, run_s: float) -> None:
    order = [
        "decode",
        "preprocess",
        "backbone",
        "keywords",
        "text_encoder",
        "query_image",
        "select",
        "decoder",
        "compose",
        "postprocess",
    ]
    n = max(n, 1)
    total = sum(totals.values())
    print(
        f"profile: model load {load_s * 1000:.1f} ms; {n} image(s) in {run_s * 1000:.1f} ms", file=sys.stderr
    )
    print(f"  {'stage':<13}{'ms/image':>10}{'share':>8}", file=sys.stderr)
    for k in order + [k for k in totals if k not in order]:
        if k in totals:
            share = totals[k] / total if total else 0.0
            print(f"  {k:<13}{totals[k] / n * 1000:>10.2f}{share:>8.1%}", file=sys.stderr)
