"""Writes that are all or nothing: a file is written next to its destination and renamed into place.

A write that fails half way (a full disk, ``ENOSPC``) leaves neither a partial file nor an empty
Kedro version folder behind, so the latest loadable version stays the previous one, and the
error names what failed and where.
"""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

from kedro.io.core import DatasetError


def remove_if_empty(folder: Path) -> None:
    """Remove ``folder`` if nothing is in it (a version folder a failed save created)."""
    try:
        folder.rmdir()
    except OSError:  # not empty, or already gone
        pass


def write_atomically(path: str | os.PathLike, write: Callable[[Path], None], what: str) -> None:
    """Call ``write(tmp)`` for a hidden sibling of ``path``, then rename it to ``path``.

    ``what`` names the data in the error (for example ``"parquet file"``). On failure the
    temporary file is removed, and so is the parent folder if this call created it.
    """
    path = Path(path)
    created = not path.parent.exists()
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write(tmp)
        os.replace(tmp, path)
    except OSError as err:
        raise DatasetError(f"writing the {what} {path} failed: {err}; nothing was written there, "
                           f"and the previous file or version, if any, is unchanged") from err
    finally:
        tmp.unlink(missing_ok=True)
        if created:
            remove_if_empty(path.parent)
