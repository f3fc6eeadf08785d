"""An npz written in place while a recording grows: `frames.npy` is its first member (zip64, stored), each
frame is appended to it as it comes, and the small arrays plus the zip directory are added at the end.

The frames member's npy header states the frame count in a fixed-width field, so finishing only patches
that field, the CRC and the sizes in place: the file never has to be copied.
"""

from __future__ import annotations

import io
import os
import struct
import time
import zipfile
import zlib
from collections.abc import Iterable, Iterator
from math import prod
from pathlib import Path

import numpy as np
from numpy.lib import format as npy_format

FRAMES_MEMBER = "frames.npy"
ZIP64_LIMIT = 0xFFFFFFFF  # sizes and offsets above it are stored in zip64 extra fields
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_END = struct.Struct("<IHHHHIIH")
_END64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR = struct.Struct("<IIQI")
_ZIP64_EXTRA = struct.Struct("<HHQQ")
_BLOCK = 1 << 20


def crc32_combine(crc1: int, crc2: int, length2: int) -> int:
    """CRC-32 of A + B from crc32(A), crc32(B) and len(B) (zlib's crc32_combine, which Python lacks)."""

    def times(matrix: list[int], vector: int) -> int:
        total, row = 0, 0
        while vector:
            if vector & 1:
                total ^= matrix[row]
            vector >>= 1
            row += 1
        return total

    def square(matrix: list[int]) -> list[int]:
        return [times(matrix, matrix[n]) for n in range(32)]

    odd = [0xEDB88320] + [1 << n for n in range(31)]  # one zero bit
    even = square(odd)  # two zero bits
    odd = square(even)  # four zero bits
    while length2:
        even = square(odd)
        if length2 & 1:
            crc1 = times(even, crc1)
        length2 >>= 1
        if not length2:
            break
        odd = square(even)
        if length2 & 1:
            crc1 = times(odd, crc1)
        length2 >>= 1
    return crc1 ^ crc2


def frames_header(count: int, frame_shape: tuple[int, ...]) -> bytes:
    """The npy header of (count, *frame_shape) uint8 rows, of one length for every count below 10**19."""
    dims = ", ".join(str(n) for n in frame_shape)
    text = f"{{'descr': '|u1', 'fortran_order': False, 'shape': ({count:19d}, {dims}), }}"
    text += " " * (-(len(text) + 11) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text.encode("latin1")


def array_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    npy_format.write_array_header_1_0(buffer, {"descr": npy_format.dtype_to_descr(dtype), "fortran_order": False,
                                               "shape": shape})
    return buffer.getvalue()


def pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data).cast("B")
    while view:
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


def claim_space(fd: int, start: int, end: int) -> None:
    """Make the disk blocks of [start, end) belong to the file: OSError (ENOSPC, EFBIG) when they cannot."""
    try:
        os.posix_fallocate(fd, start, end - start)
    except AttributeError:  # no posix_fallocate (macOS): the space is claimed by the writes themselves
        os.ftruncate(fd, max(end, os.fstat(fd).st_size))


def _dos_stamp() -> tuple[int, int]:
    now = time.localtime()
    return ((now.tm_hour << 11) | (now.tm_min << 5) | (now.tm_sec // 2),
            ((now.tm_year - 1980) << 9) | (now.tm_mon << 5) | now.tm_mday)


class Member:
    """A member after `frames.npy`: its npy header plus the data, read from a file or given as bytes."""

    def __init__(self, name: str, header: bytes, size: int, source: Path | bytes) -> None:
        self.name, self.header, self.size, self.source = name, header, size, source

    def chunks(self) -> Iterator[bytes]:
        yield self.header
        if isinstance(self.source, bytes):
            yield self.source
            return
        left = self.size - len(self.header)
        with open(self.source, "rb") as fh:
            while left > 0:
                block = fh.read(min(_BLOCK, left))
                if not block:
                    raise OSError(f"{self.source} is shorter than its {self.size - len(self.header)} bytes")
                left -= len(block)
                yield block


class FramesNpz:
    """An npz whose `frames.npy` member grows frame by frame at the start of the file.

    `put(index, frame)` writes a frame, `commit(frame)` counts it (once the rest of its row is safe),
    `finish(members)` appends the other members and the directory. `allocate(end)` reserves disk space
    up to `end`, so that finishing never needs more than the file already holds.
    """

    def __init__(self, path: Path, frame_shape: tuple[int, ...], *, create: bool) -> None:
        self.path = path
        self.frame_shape = tuple(frame_shape)
        self.frame_bytes = prod(self.frame_shape)
        self._name = FRAMES_MEMBER.encode()
        self._header_at = _LOCAL.size + len(self._name) + _ZIP64_EXTRA.size
        self.data_start = self._header_at + len(frames_header(0, self.frame_shape))
        self.frames = 0
        self._crc = 0
        self._stamp = _dos_stamp()
        self._fd = os.open(path, os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0), 0o644)
        try:
            if create:
                pwrite_all(self._fd, self._local_header(self._name, 0, 0, zip64=True)
                           + frames_header(0, self.frame_shape), 0)
            self.allocated = os.fstat(self._fd).st_size
        except BaseException:
            os.close(self._fd)
            raise

    def allocate(self, end: int) -> None:
        """Make sure the disk blocks up to `end` belong to the file (raises OSError when the disk is full)."""
        if end > self.allocated:
            claim_space(self._fd, self.allocated, end)
            self.allocated = end

    def size(self) -> int:
        return os.fstat(self._fd).st_size

    def put(self, index: int, frame: np.ndarray) -> None:
        pwrite_all(self._fd, frame.data, self.data_start + index * self.frame_bytes)

    def commit(self, frame: np.ndarray) -> None:
        self._crc = zlib.crc32(frame.data, self._crc)
        self.frames += 1

    def rescan(self, frames: int) -> None:
        """Count the first `frames` frames on disk (recovery): their CRC is read back from the file."""
        crc, left, offset = 0, frames * self.frame_bytes, self.data_start
        while left > 0:
            block = os.pread(self._fd, min(_BLOCK, left), offset)
            if not block:
                raise OSError(f"{self.path} holds fewer than {frames} frames")
            crc = zlib.crc32(block, crc)
            left, offset = left - len(block), offset + len(block)
        self._crc, self.frames = crc, frames

    def finish(self, members: Iterable[Member]) -> None:
        """Write the other members and the zip directory after the frames, patch the frames member, close."""
        header = frames_header(self.frames, self.frame_shape)
        data_size = self.frames * self.frame_bytes
        size = len(header) + data_size
        entries = [(self._name, crc32_combine(zlib.crc32(header), self._crc, data_size), size, 0, True)]
        offset = self.data_start + data_size
        for member in members:
            name, crc, start = member.name.encode(), 0, offset
            local = self._local_header(name, 0, member.size, zip64=member.size > ZIP64_LIMIT)
            pwrite_all(self._fd, local, offset)
            offset += len(local)
            for chunk in member.chunks():
                pwrite_all(self._fd, chunk, offset)
                crc, offset = zlib.crc32(chunk, crc), offset + len(chunk)
            pwrite_all(self._fd, struct.pack("<I", crc), start + 14)
            entries.append((name, crc, member.size, start, member.size > ZIP64_LIMIT))
        directory = b"".join(self._central_entry(*entry) for entry in entries)
        tail = directory + self._end_records(len(entries), len(directory), offset)
        pwrite_all(self._fd, tail, offset)
        os.ftruncate(self._fd, offset + len(tail))
        pwrite_all(self._fd, struct.pack("<I", entries[0][1]), 14)
        pwrite_all(self._fd, struct.pack("<QQ", size, size), _LOCAL.size + len(self._name) + 4)
        pwrite_all(self._fd, header, self._header_at)
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _local_header(self, name: bytes, crc: int, size: int, *, zip64: bool) -> bytes:
        extra = _ZIP64_EXTRA.pack(1, 16, size, size) if zip64 else b""
        stored = 0xFFFFFFFF if zip64 else size
        return _LOCAL.pack(0x04034B50, 45 if zip64 else 20, 0, 0, *self._stamp, crc, stored, stored,
                           len(name), len(extra)) + name + extra

    def _central_entry(self, name: bytes, crc: int, size: int, offset: int, zip64: bool) -> bytes:
        values = [size, size] if zip64 else []
        if offset > ZIP64_LIMIT:
            values.append(offset)
        extra = struct.pack(f"<HH{len(values)}Q", 1, 8 * len(values), *values) if values else b""
        version = 45 if values else 20
        stored = 0xFFFFFFFF if zip64 else size
        return _CENTRAL.pack(0x02014B50, (3 << 8) | version, version, 0, 0, *self._stamp, crc, stored, stored,
                             len(name), len(extra), 0, 0, 0, 0o644 << 16,
                             0xFFFFFFFF if offset > ZIP64_LIMIT else offset) + name + extra

    @staticmethod
    def _end_records(count: int, size: int, offset: int) -> bytes:
        records = b""
        if count > 0xFFFF or size > ZIP64_LIMIT or offset > ZIP64_LIMIT:
            records = (_END64.pack(0x06064B50, _END64.size - 12, 45, 45, 0, 0, count, count, size, offset)
                       + _LOCATOR.pack(0x07064B50, 0, offset + size, 1))
            count, size, offset = 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF
        return records + _END.pack(0x06054B50, 0, 0, count, count, size, offset, 0)


def frames_and_metadata(path: Path) -> tuple[int, str]:
    """The frame count and the metadata JSON of a finished recording npz, without reading its frames."""
    with zipfile.ZipFile(path) as archive:
        with archive.open(FRAMES_MEMBER) as member:
            shape = _shape(member, npy_format.read_magic(member))
        with archive.open("metadata.npy") as member:
            metadata = npy_format.read_array(member, allow_pickle=False)
    return shape[0], str(metadata.item())


def _shape(member: io.BufferedIOBase, version: tuple[int, int]) -> tuple[int, ...]:
    reader = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
    return reader(member)[0]


def iter_frames(path: Path) -> Iterator[np.ndarray]:
    """The frames of a finished recording npz, one (H, W, 3) array at a time."""
    with zipfile.ZipFile(path) as archive, archive.open(FRAMES_MEMBER) as member:
        shape = _shape(member, npy_format.read_magic(member))
        size = prod(shape[1:])
        for _ in range(shape[0]):
            yield np.frombuffer(member.read(size), np.uint8).reshape(shape[1:])
