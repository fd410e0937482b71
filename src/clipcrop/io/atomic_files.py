"""Writing files atomically, with the permissions the umask gives: the one helper every writer uses.

``tempfile.mkstemp`` creates its file ``0600`` whatever the umask, so a file renamed from it stays
private to its owner (crops a web server or a colleague cannot read). Here the temporary file is
created next to the target with ``os.open(..., O_CREAT | O_EXCL, 0o666)``, so the kernel applies
the process umask (and a folder's default ACL) exactly as for a plain ``open(path, "w")``: ``0644``
under umask ``022``, ``0600`` under ``077``. It is then written, ``fsync``-ed and renamed over the
target (``overwrite``) or hard-linked to it (never replacing a file that exists, even one that
appeared a moment ago), and the folder is ``fsync``-ed. A reader sees the old file or the new
one, never a part of one; a failure leaves no temporary file behind.

Used by crops and overlays (:func:`clipcrop.io.render.save_atomic`), evaluation predictions, the batch
results file's repair, and model cards; :func:`apply_umask` fixes the files other libraries write
into a checkpoint folder before it is published.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from ..errors import OutputExistsError

#: permission bits asked for when creating a file; the umask takes away what it masks
FILE_MODE = 0o666
_TEMP_ATTEMPTS = 100
_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process umask, read without changing it where the system allows (Linux ``/proc``)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    with _UMASK_LOCK:  # elsewhere: set and restore at once (the only portable way to read it)
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def apply_umask(root: str | os.PathLike, names: Iterable[str] | None = None) -> None:
    """Give every regular file under ``root`` (or ``root`` itself) ``0o666 & ~umask``.

    For files other libraries create through their own temporary files (safetensors, for one,
    leaves ``0600`` whatever the umask): checkpoint folders are passed here before they are
    published. ``names`` limits it to those files directly in ``root`` (missing ones are skipped).
    """
    mode = FILE_MODE & ~current_umask()
    root = Path(root)
    if names is not None:
        paths = [root / n for n in names if (root / n).is_file()]
    elif root.is_file():
        paths = [root]
    else:
        paths = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    for path in paths:
        os.chmod(path, mode)


def fsync_dir(folder: str | os.PathLike) -> None:
    """``fsync`` a folder so that a rename or a new entry in it survives a crash (best effort)."""
    try:
        fd = os.open(str(folder), os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without folder descriptors
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def _create_temp(target: Path) -> tuple[int, Path]:
    """A new, empty temporary file next to ``target``, created with :data:`FILE_MODE` (umask applied)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(_TEMP_ATTEMPTS):
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
        try:
            return os.open(str(tmp), flags, FILE_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(target.parent))  # pragma: no cover


def _publish(tmp: Path, target: Path, overwrite: bool) -> None:
    """Move the complete ``tmp`` to ``target``; without ``overwrite`` an existing target is kept."""
    if overwrite:
        os.replace(tmp, target)
        return
    try:
        os.link(tmp, target)  # atomic "create if absent": fails when target exists
    except FileExistsError:
        raise OutputExistsError(
            f"{target}: already exists; pass --overwrite to replace it, or choose another output folder"
        ) from None
    except OSError:  # file system without hard links: check, then rename (a tiny race remains)
        if os.path.lexists(target):
            raise OutputExistsError(
                f"{target}: already exists; pass --overwrite to replace it, or choose another output folder"
            ) from None
        os.replace(tmp, target)
        return
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_open(
    path: str | os.PathLike, mode: str = "wb", *, overwrite: bool = True, encoding: str | None = None
) -> Iterator[IO]:
    """Open a temporary file for writing that becomes ``path`` when the block ends without error.

    Args:
        path: the target; its folder is created when missing.
        mode: ``"wb"`` or ``"w"`` (text; ``encoding`` defaults to UTF-8).
        overwrite: replace an existing ``path``; when False an existing file is left untouched and
            :class:`~clipcrop.errors.OutputExistsError` is raised (checked again at the rename).

    The file gets ``0o666 & ~umask``, like any file the process creates.
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open writes new files only (mode 'w' or 'wb'), not {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite and os.path.lexists(target):  # fail before any work
        raise OutputExistsError(
            f"{target}: already exists; pass --overwrite to replace it, or choose another output folder"
        )
    fd, tmp = _create_temp(target)
    try:
        text = mode == "w"
        with os.fdopen(fd, mode, encoding=(encoding or "utf-8") if text else None) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        _publish(tmp, target, overwrite)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def write_atomic(path: str | os.PathLike, data: bytes, *, overwrite: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`); returns the path."""
    with atomic_open(path, "wb", overwrite=overwrite) as fh:
        fh.write(data)
    return Path(path)


__all__ = ["FILE_MODE", "apply_umask", "atomic_open", "current_umask", "fsync_dir", "write_atomic"]
