"""Write the hostile corpus of ``tests/hostile.py`` to ``tests/data/hostile/`` as real files.

The builder in ``hostile.py`` is the single source of truth; these files exist so that people can
open them (or feed them to other tools) and are checked against the builder by
``tests/test_hostile.py::test_committed_corpus_matches_builder``.  After changing the builder::

    python tests/make_hostile_corpus.py          # rewrite the folder
    python tests/make_hostile_corpus.py --check  # exit 1 if the folder is out of date

``MANIFEST.json`` lists every file with what loading it must give.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from hostile import IMAGE_CASES, HostileCase  # noqa: E402

CORPUS_DIR = HERE / "data" / "hostile"
MANIFEST = "MANIFEST.json"


def _expect_text(case: HostileCase) -> str:
    if case.env_dependent:
        return "unsupported_format or unreadable_image (depends on installed Pillow plugins)"
    return case.expect.code if case.expect else "valid"


def expected_files() -> dict[str, bytes]:
    """File name -> bytes of everything the corpus folder must hold (cases + manifest)."""
    files = {case.filename: case.data for case in IMAGE_CASES}
    manifest = [
        {
            "name": case.name,
            "file": case.filename,
            "bytes": len(case.data),
            "sha256": hashlib.sha256(case.data).hexdigest(),
            "expect": _expect_text(case),
            "size": list(case.size) if case.size else None,
            "bomb": case.bomb,
            "note": case.note,
        }
        for case in IMAGE_CASES
    ]
    files[MANIFEST] = (json.dumps(manifest, indent=1, ensure_ascii=False) + "\n").encode()
    assert len(files) == len(IMAGE_CASES) + 1, "two cases share a file name"
    return files


def differences(folder: Path = CORPUS_DIR) -> list[str]:
    """What differs between ``folder`` and the builder (empty when up to date)."""
    want = expected_files()
    have = {p.name for p in folder.iterdir() if p.is_file()} if folder.is_dir() else set()
    out = [f"missing: {n}" for n in sorted(set(want) - have)]
    out += [f"stale: {n}" for n in sorted(have - set(want))]
    out += [f"differs: {n}" for n in sorted(set(want) & have) if (folder / n).read_bytes() != want[n]]
    return out


def write(folder: Path = CORPUS_DIR) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    want = expected_files()
    for path in folder.iterdir():
        if path.is_file() and path.name not in want:
            path.unlink()
    for name, data in want.items():
        target = folder / name
        if not target.exists() or target.read_bytes() != data:
            target.write_bytes(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report differences; exit 1 if any")
    parser.add_argument("--out", type=Path, default=CORPUS_DIR, help="folder to write (default: %(default)s)")
    args = parser.parse_args(argv)
    if args.check:
        diff = differences(args.out)
        print("\n".join(diff) or "corpus up to date")
        return 1 if diff else 0
    write(args.out)
    total = sum(len(d) for d in expected_files().values())
    print(f"wrote {len(IMAGE_CASES)} cases + {MANIFEST} to {args.out} ({total / 1024:.0f} kB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
