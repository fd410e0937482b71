"""Coverage-guided fuzzing of image decoding and query validation with atheris (libFuzzer).

The target feeds every input to :func:`clipcrop.io.images.decode_bytes` and, read as text, to
:func:`clipcrop.validation.validate_query`.  Any exception that is not a
:class:`~clipcrop.errors.ClipCropError` is a crash; so is exceeding libFuzzer's memory limit
(``-rss_limit_mb``, 2048 by default) or its time limit (``-timeout``).

Long runs, from the repository root::

    python tests/fuzz_load.py -atheris_runs=1000000
    python tests/fuzz_load.py -max_total_time=3600 -timeout=20 -rss_limit_mb=1024 my_corpus/

Without a corpus folder on the command line, a temporary one is seeded with the hostile corpus
of ``tests/hostile.py``; with one, the seeds are copied into it first.  libFuzzer writes crashing
inputs as ``crash-<sha1>`` (or ``oom-``/``timeout-``) files in the current folder.  Keep each
as a regression: add it to ``build_image_cases`` in ``tests/hostile.py`` (as a base64 literal,
with the error it must raise), then run ``python tests/make_hostile_corpus.py``.

A quick reproduction of one file::

    python tests/fuzz_load.py crash-0123abcd...
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import atheris

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

with atheris.instrument_imports(include=["clipcrop", "PIL"]):
    from PIL import Image

    from clipcrop.errors import ClipCropError
    from clipcrop.io.images import decode_bytes
    from clipcrop.limits import Limits
    from clipcrop.validation import validate_query

    Image.init()  # import (and instrument) every Pillow plugin now

# Smaller than the defaults so that a fuzzer-made "valid" 50 MP image does not cost seconds each
# time; the checks themselves are the same code.
LIMITS = Limits(max_pixels=4_000_000, max_file_bytes=4 * 1024 * 1024, decode_max_side=512)


def check_image(data: bytes) -> None:
    try:
        loaded = decode_bytes(data, LIMITS, name="<fuzz>")
    except ClipCropError:
        return
    assert loaded.image.mode == "RGB", loaded.image.mode
    assert loaded.width > 0 and loaded.height > 0
    assert loaded.width * loaded.height <= LIMITS.max_pixels


def check_query(text: str) -> None:
    try:
        out = validate_query(text, LIMITS)
    except ClipCropError:
        return
    assert out is not None and out == out.strip() and len(out) <= LIMITS.max_query_chars
    assert validate_query(out, LIMITS) == out


def TestOneInput(data: bytes) -> None:  # noqa: N802 - atheris' name
    check_image(data)
    fdp = atheris.FuzzedDataProvider(data[:4096])
    check_query(fdp.ConsumeUnicode(4096))


def _seed(folder: Path) -> None:
    from hostile import IMAGE_CASES

    for case in IMAGE_CASES:
        if case.data:
            (folder / f"seed-{case.name}").write_bytes(case.data)


def main(argv: list[str]) -> None:
    corpus_dirs = [a for a in argv[1:] if not a.startswith("-") and Path(a).is_dir()]
    files = [a for a in argv[1:] if not a.startswith("-") and Path(a).is_file()]
    if not files:
        if corpus_dirs:
            _seed(Path(corpus_dirs[0]))
        else:
            folder = Path(tempfile.mkdtemp(prefix="clipcrop-fuzz-"))
            _seed(folder)
            argv = [*argv, str(folder)]
            print(f"fuzz_load: corpus in {folder}", file=sys.stderr)
    atheris.Setup(argv, TestOneInput)
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
