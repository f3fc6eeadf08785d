"""The spool of a segment being written: chunks of rows on disk, streamed into the npz at the end."""

from __future__ import annotations

import json
import os
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

from engine.recordings.format import json_default, with_suffix


def write_chunk(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """One spool chunk, written to a temporary name and renamed so a crash never leaves half a chunk."""
    tmp = with_suffix(path, ".tmp")
    try:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def spool_chunks(spool: Path) -> list[Path]:
    return sorted(spool.glob("chunk_*.npz"))


@contextmanager
def chunk_arrays(source: Path | Mapping[str, np.ndarray]) -> Iterator[Mapping[str, np.ndarray]]:
    """A spool chunk (read lazily, one array at a time) or rows still in memory."""
    if isinstance(source, Path):
        with np.load(source, allow_pickle=False) as data:
            yield data
    else:
        yield source


def assemble_npz(target: Path, chunks: list[Path], pending: Mapping[str, np.ndarray] | None,
                  metadata: dict) -> int:
    """Stream spool chunks (+ rows still in memory) into `target` via `target.tmp`; returns the frame count.

    Each array becomes one `.npy` member written chunk by chunk, so memory stays at one chunk. The
    first chunk that cannot be read (only possible if the file system lost it) ends the sequence.
    """
    sources: list[Path | Mapping[str, np.ndarray]] = []
    counts: list[int] = []
    for path in chunks:
        try:
            with chunk_arrays(path) as data:
                counts.append(len(data["timestamps"]))
        except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError):
            break
        sources.append(path)
    if pending is not None:
        sources.append(pending)
        counts.append(len(pending["timestamps"]))
    if not sources:
        return 0
    with chunk_arrays(sources[0]) as first:
        specs = {name: (first[name].shape[1:], first[name].dtype) for name in first}
    total = sum(counts)
    metadata = {**metadata, "num_frames": total}
    tmp = with_suffix(target, ".tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, (shape, dtype) in specs.items():
                with zf.open(f"{name}.npy", "w", force_zip64=True) as member:
                    npy_format.write_array_header_1_0(member, {
                        "descr": npy_format.dtype_to_descr(dtype), "fortran_order": False,
                        "shape": (total, *shape)})
                    for source in sources:
                        with chunk_arrays(source) as data:
                            member.write(np.ascontiguousarray(data[name], dtype=dtype).data)
            with zf.open("metadata.npy", "w") as member:
                npy_format.write_array(member, np.array(json.dumps(metadata, default=json_default)))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return total
