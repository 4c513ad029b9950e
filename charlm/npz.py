"""Read a .npz safely: the zip directory, then every member's .npy header, then only the data asked for.

`numpy.load` decompresses a member to learn what it holds.  An `Archive`
reads what each member claims first, so that a caller can refuse a file
before a byte of array data is read, and then reads each array into exactly
the memory its header describes.  In order:

1. the end of the archive: how many members it lists and how large its
   directory is (zip64 records included), at most `max_members` (and
   DIRECTORY_ENTRY bytes each), before the directory itself is parsed;
2. the directory: every name ends in .npy and appears once; each member is
   stored or deflated (no other compression, no encryption);
3. each member's .npy header (at most HEADER_LIMIT bytes, read from the
   decompressing stream): a plain dtype (no objects, which need pickle; no
   records; no empty items), a shape of non-negative sizes, and a size in
   the directory equal to header + (product of the shape) × item size;
4. `read(name)`: one buffer of exactly that size, filled from the stream
   CHUNK bytes at a time; a stream that ends early or fails its CRC is refused.

`check` compares a header with a `Spec` (what the caller expects of a
member).  Every problem is one line of the caller's error class, naming
the member.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

import numpy as np
from numpy.lib import format as npy

from charlm.errors import CharlmError

HEADER_LIMIT = 10_000       # bytes of .npy header read at most (NumPy's own limit for a safe header)
CHUNK = 1 << 20             # bytes read from a member's stream at once
DIRECTORY_ENTRY = 256       # bytes of zip directory allowed per member (46 fixed, the name, extra fields)
FAMILIES = {"int": ("iu", "an integer"), "float": ("f", "a float"), "str": ("U", "a string")}
_END, _END64, _LOCATOR64 = b"PK\x05\x06", b"PK\x06\x06", b"PK\x06\x07"


@dataclass(frozen=True)
class Header:
    """What a member's .npy header says (and, in an archive, where its data starts)."""

    dtype: np.dtype
    shape: tuple
    fortran_order: bool = False
    offset: int = 0          # bytes of magic, length and header before the data

    @property
    def nbytes(self) -> int:
        """The data's size in bytes (a Python int: a shape cannot overflow it)."""
        return math.prod(self.shape) * self.dtype.itemsize


@dataclass(frozen=True)
class Spec:
    """What a member must be.

    dtype: an exact dtype ("float32", "int64"), or a family (`FAMILIES`:
    "int", "float", "str") whose items are at most `max_itemsize` bytes
    (8 unless given).  shape: one entry per axis, a size or a range of sizes.
    """

    dtype: str
    shape: tuple
    max_itemsize: int | None = None


def header_of(a: np.ndarray) -> Header:
    """The header an array is saved with (to check arrays in memory as a file's members are checked)."""
    return Header(a.dtype, a.shape)


def check(name: str, header: Header, spec: Spec, error: type[CharlmError] = CharlmError) -> None:
    """`error` naming the member unless its header fits `spec`."""
    family = FAMILIES.get(spec.dtype)
    fits = header.dtype.kind in family[0] if family else header.dtype == np.dtype(spec.dtype)
    if not fits:
        raise error(f"{name!r} has dtype {header.dtype}, expected {family[1] if family else spec.dtype}")
    if len(header.shape) != len(spec.shape) or not all(
            n == s if isinstance(s, int) else n in s for n, s in zip(header.shape, spec.shape)):
        raise error(f"{name!r} has shape {header.shape}, expected {_shape_text(spec.shape)}")
    limit = spec.max_itemsize or 8
    if family and header.dtype.itemsize > limit:
        what = f"{header.dtype.itemsize // 4:,} characters" if header.dtype.kind == "U" else f"{header.dtype.itemsize} bytes"
        most = f"{limit // 4:,} characters" if header.dtype.kind == "U" else f"{limit} bytes"
        raise error(f"{name!r} holds items of {what}, more than the {most} it may have")


def check_all(headers: dict[str, Header], specs: dict[str, Spec], error: type[CharlmError] = CharlmError) -> None:
    """Every member of `specs` present and fitting it (in the order of `specs`), and no other."""
    for name, spec in specs.items():
        if name not in headers:
            raise error(f"missing key {name!r}")
        check(name, headers[name], spec, error)
    unknown = sorted(set(headers) - set(specs))
    if unknown:
        raise error(f"unexpected key {unknown[0][:60]!r}")


def _shape_text(shape: tuple) -> str:
    """A spec's shape in a message, e.g. (32, 10) or (n,) with n ≤ 1,000,000."""
    names = iter("nmk")
    parts, limits = [], []
    for s in shape:
        if isinstance(s, int):
            parts.append(str(s))
        else:
            parts.append(next(names))
            limits.append(f"{parts[-1]} ≤ {s[-1]:,}" if len(s) else f"{parts[-1]} in {s}")
    text = "(" + ", ".join(parts) + ("," if len(parts) == 1 else "") + ")"
    return text + (" with " + ", ".join(limits) if limits else "")


class Archive:
    """An open .npz archive: `headers` (member name without .npy -> Header) at once, `read(name)` on request.

    `file` is a seekable binary file, open for as long as the archive is
    used.  `error` is the class every refusal raises.
    """

    def __init__(self, file: BinaryIO, error: type[CharlmError] = CharlmError, max_members: int = 4096):
        self.error = error
        self._infos: dict[str, zipfile.ZipInfo] = {}
        self.headers: dict[str, Header] = {}
        try:
            _check_end(file, max_members, error)
            self.zip = zipfile.ZipFile(file)
            infos = self.zip.infolist()
        except CharlmError:
            raise
        except Exception as e:   # BadZipFile, OSError, struct.error, ... of a damaged archive
            raise error(f"not a valid .npz archive: {_short(e)}") from None
        if len(infos) > max_members:
            raise error(f"the archive has {len(infos):,} members, more than the {max_members:,} expected at most")
        for info in infos:
            name = self._member_name(info)
            self._infos[name] = info
            self.headers[name] = self._guarded(name, self._read_header, name, info)

    def __enter__(self) -> "Archive":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if hasattr(self, "zip"):
            self.zip.close()

    def read(self, name: str) -> np.ndarray:
        """The array of member `name`, read into one buffer of the size its (checked) header gives."""
        return self._guarded(name, self._read_data, name)

    def _member_name(self, info: zipfile.ZipInfo) -> str:
        if not info.filename.endswith(".npy"):
            raise self.error(f"member {info.filename[:60]!r} is not an .npy array")
        name = info.filename[:-len(".npy")]
        shown = repr(name[:60])
        if name in self._infos:
            raise self.error(f"member {shown} appears twice in the archive")
        if info.flag_bits & 0x1:
            raise self.error(f"member {shown} is encrypted")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise self.error(f"member {shown} uses compression method {info.compress_type} "
                             "(only stored and deflated members are read)")
        return name

    def _guarded(self, name: str, function, *args):
        """function(*args), every failure of a damaged member an error naming it."""
        try:
            return function(*args)
        except CharlmError:
            raise
        except Exception as e:   # zlib.error, BadZipFile (CRC), EOFError, OSError, ValueError of a bad header
            raise self.error(f"member {name!r} is damaged: {_short(e)}") from None

    def _read_header(self, name: str, info: zipfile.ZipInfo) -> Header:
        with self.zip.open(info) as stream:
            magic = _exactly(stream, npy.MAGIC_LEN)
            version = npy.read_magic(io.BytesIO(magic))
            if version not in ((1, 0), (2, 0), (3, 0)):
                raise self.error(f"member {name!r} has .npy format version {version}, not 1.0, 2.0 or 3.0")
            length_bytes = _exactly(stream, 2 if version == (1, 0) else 4)
            length = int.from_bytes(length_bytes, "little")
            if length > HEADER_LIMIT:
                raise self.error(f"member {name!r} has a .npy header of {length:,} bytes "
                                 f"(at most {HEADER_LIMIT:,} are read)")
            text = io.BytesIO(length_bytes + _exactly(stream, length))
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, fortran_order, dtype = read_header(text)   # (3.0 differs from 2.0 only in UTF-8 field names)
        if dtype.hasobject:
            raise self.error(f"member {name!r} holds a pickled object array; refusing to load it "
                             "(pickles can run code)")
        if dtype.fields is not None or dtype.subdtype is not None or dtype.itemsize == 0:
            raise self.error(f"member {name!r} has dtype {dtype}, not an array of plain numbers or strings")
        if any(n < 0 for n in shape):
            raise self.error(f"member {name!r} has a negative size in its shape {shape}")
        header = Header(dtype, tuple(shape), fortran_order, npy.MAGIC_LEN + len(length_bytes) + length)
        if info.file_size != header.offset + header.nbytes:
            raise self.error(f"member {name!r} is {info.file_size:,} bytes in the zip directory, but its header "
                             f"describes {header.offset + header.nbytes:,} ({dtype} of shape {header.shape})")
        return header

    def _read_data(self, name: str) -> np.ndarray:
        header = self.headers[name]
        flat = np.empty(header.nbytes, dtype=np.uint8)
        view, pos = memoryview(flat), 0
        with self.zip.open(self._infos[name]) as stream:
            _exactly(stream, header.offset)
            while pos < header.nbytes:
                piece = stream.read(min(CHUNK, header.nbytes - pos))
                if not piece:
                    raise self.error(f"member {name!r} is truncated ({pos:,} of {header.nbytes:,} bytes of data)")
                view[pos:pos + len(piece)] = piece
                pos += len(piece)
            if stream.read(1):   # (the directory's size bounds the stream: this only makes zip check the CRC)
                raise self.error(f"member {name!r} has more data than its header describes")
        return np.ndarray(header.shape, header.dtype, buffer=flat, order="F" if header.fortran_order else "C")


def _exactly(stream, n: int) -> bytes:
    data = stream.read(n)
    while len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            raise EOFError(f"the member ends after {len(data)} of {n} bytes of its header")
        data += more
    return data


def _check_end(file: BinaryIO, max_members: int, error: type[CharlmError]) -> None:
    """Refuse an archive whose end records list more members, or a larger directory, than `max_members` can have.

    Reads the records `zipfile` would (the end of central directory record
    at the end of the file, or the last one in its final 64 KiB, and the
    zip64 record just before it), before `zipfile` parses the directory.
    """
    file.seek(0, io.SEEK_END)
    size = file.tell()
    window = min(size, 22 + 0xFFFF + 20 + 56)
    file.seek(size - window)
    tail = file.read(window)
    at = len(tail) - 22 if tail[-22:-18] == _END and tail[-2:] == b"\0\0" else tail.rfind(_END)
    if at < 0 or at + 22 > len(tail):
        return   # not a zip archive: zipfile says so
    count, directory = struct.unpack("<10xHL6x", tail[at:at + 22])
    if at >= 20 + 56 and tail[at - 20:at - 16] == _LOCATOR64 and tail[at - 76:at - 72] == _END64:
        count64, directory64 = struct.unpack("<32xQQ8x", tail[at - 76:at - 20])
        count, directory = max(count, count64), max(directory, directory64)
    if count > max_members or directory > max_members * DIRECTORY_ENTRY:
        raise error(f"the archive lists {count:,} members in a directory of {directory:,} bytes; "
                    f"at most {max_members:,} members are expected")
    file.seek(0)


def _short(e: Exception) -> str:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return msg[:160]
