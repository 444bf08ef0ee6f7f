"""TensorFlow checkpoint "tensor bundles" read (and, for tests, written) with numpy alone.

DeepSpot's weights exist only as a TF SavedModel. Its ``variables/`` folder is a tensor bundle: an index
file (a LevelDB-format table mapping tensor names to small protobuf records) and data shards holding the
raw little-endian tensors. We decode the handful of protobuf fields by hand and check the masked CRC32C
checksums the format stores, so a truncated or damaged download is reported, not silently loaded. Neither
TensorFlow nor the protobuf package is needed.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelFileError

# ---------------------------------------------------------------------------------------------------------
# CRC32C (Castagnoli), as LevelDB/TF use it, with their "mask" so that CRCs of CRCs stay well spread
# ---------------------------------------------------------------------------------------------------------
_POLY = 0x82F63B78
_MASK_DELTA = 0xA282EAD8
_M32 = 0xFFFFFFFF


def _byte_table() -> np.ndarray:
    t = np.arange(256, dtype=np.uint32)
    for _ in range(8):
        t = np.where(t & 1, (t >> 1) ^ np.uint32(_POLY), t >> 1).astype(np.uint32)
    return t


_TABLE = _byte_table()
_TABLE_L = [int(v) for v in _TABLE]


def _advance(reg: int, data: bytes) -> int:
    """The reflected CRC register after feeding ``data`` (no initial or final xor)."""
    t = _TABLE_L
    for b in data:
        reg = t[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _op_apply(op: list[int], v: int) -> int:
    """Apply a GF(2)-linear map on 32-bit registers, given as the images of the 32 unit vectors."""
    r, j = 0, 0
    while v:
        if v & 1:
            r ^= op[j]
        v >>= 1
        j += 1
    return r


@functools.lru_cache(maxsize=64)
def _zeros_op(n: int) -> tuple[int, ...]:
    """The linear map "advance the register over ``n`` zero bytes", by repeated squaring."""
    result = [1 << j for j in range(32)]
    base = [_advance(1 << j, b"\0") for j in range(32)]
    while n:
        if n & 1:
            result = [_op_apply(base, x) for x in result]
        base = [_op_apply(base, x) for x in base]
        n >>= 1
    return tuple(result)


@functools.lru_cache(maxsize=16)
def _zeros_tables(n: int) -> tuple[list[int], ...]:
    """``_zeros_op(n)`` as four 256-entry tables, one per register byte, for a fast scalar apply."""
    op = list(_zeros_op(n))
    return tuple([_op_apply(op, b << (8 * k)) for b in range(256)] for k in range(4))


def crc32c(data, crc: int = 0) -> int:
    """Standard CRC32C of ``data`` (bytes-like or uint8 array), optionally continuing from ``crc``.

    Long inputs are cut into equal chunks whose CRCs are computed side by side with numpy (one table step
    per byte position), then chained by the linear "shift over L zero bytes" map. 16 MB takes ~0.1 s.
    """
    if isinstance(data, np.ndarray):
        buf = data.reshape(-1).view(np.uint8)
    else:
        buf = np.frombuffer(data, dtype=np.uint8)
    n = buf.size
    reg = (crc ^ _M32) & _M32
    if n < 8192:
        return _advance(reg, buf.tobytes()) ^ _M32
    chunk = 1 << round(math.log2(math.sqrt(n)))
    count = n // chunk
    cols = np.ascontiguousarray(buf[: count * chunk].reshape(count, chunk).T)  # (chunk, count)
    c = np.zeros(count, dtype=np.uint32)
    for row in cols:
        c = _TABLE[(c ^ row) & 0xFF] ^ (c >> 8)
    # raw chunk CRCs start from 0; the register value before each chunk is shifted across it and added
    t0, t1, t2, t3 = _zeros_tables(chunk)
    for ci in c.tolist():
        reg = t0[reg & 0xFF] ^ t1[(reg >> 8) & 0xFF] ^ t2[(reg >> 16) & 0xFF] ^ t3[reg >> 24] ^ ci
    reg = _advance(reg, buf[count * chunk:].tobytes())
    return reg ^ _M32


def mask_crc(crc: int) -> int:
    return ((((crc >> 15) | (crc << 17)) & _M32) + _MASK_DELTA) & _M32


def unmask_crc(masked: int) -> int:
    rot = (masked - _MASK_DELTA) & _M32
    return ((rot >> 17) | (rot << 15)) & _M32


# ---------------------------------------------------------------------------------------------------------
# protobuf wire format: just enough to read and write the bundle records
# ---------------------------------------------------------------------------------------------------------
def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("varint runs past the end of the buffer")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def proto_fields(buf: bytes) -> list[tuple[int, int, object]]:
    """(field number, wire type, value) for every field; length-delimited values stay bytes."""
    out, pos = [], 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = _varint(buf, pos)
        elif wire == 1:
            val = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            ln, pos = _varint(buf, pos)
            if pos + ln > len(buf):
                raise ValueError("length-delimited field runs past the end")
            val = bytes(buf[pos:pos + ln])
            pos += ln
        elif wire == 5:
            val = struct.unpack_from("<I", buf, pos)[0]
            pos += 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        out.append((field, wire, val))
    if pos != len(buf):
        raise ValueError("protobuf message ends inside a field")
    return out


def _signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


# ---------------------------------------------------------------------------------------------------------
# bundle entries
# ---------------------------------------------------------------------------------------------------------
#: TF DataType enum -> numpy dtype ("string" handled apart; bfloat16 widened to float32 on read)
DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 7: "string", 9: "<i8", 10: "?",
          14: "bfloat16", 17: "<u2", 19: "<f2", 22: "<u4", 23: "<u8"}
_DTYPE_CODES = {np.dtype(v): k for k, v in DTYPES.items() if v not in ("string", "bfloat16")}

_FOOTER_LEN = 48
_TABLE_MAGIC = 0xDB4775248B80FB57


@dataclass(frozen=True)
class BundleEntry:
    name: str
    dtype: int  # TF DataType code
    shape: tuple[int, ...]
    shard: int
    offset: int
    size: int
    crc32c: int | None  # masked, as stored; None when the writer left it out

    @property
    def numpy_dtype(self) -> str:
        return DTYPES.get(self.dtype, "?unknown")


#: what a crafted index may make us do: DeepSpot's index is 20 KB with ~100 tensors, its largest is 40 MB
MAX_INDEX_BYTES = 64 << 20
MAX_KEY_BYTES = 4096
MAX_TENSOR_BYTES = 1 << 30
#: protobuf wire type each BundleEntryProto field must have (0 varint, 2 bytes, 5 fixed32)
_ENTRY_WIRE = {1: 0, 2: 2, 3: 0, 4: 0, 5: 0, 6: 5}


def _parse_entry(name: str, value: bytes) -> BundleEntry:
    dtype, shape, shard, offset, size, crc = 0, (), 0, 0, 0, None
    for field, wire, val in proto_fields(value):
        if field in _ENTRY_WIRE and wire != _ENTRY_WIRE[field]:
            raise ValueError(f"field {field} of tensor {name!r} has the wrong wire type {wire}")
        if field == 1:
            dtype = val
        elif field == 2:
            dims = []
            for f2, w2, dim in proto_fields(val):
                if f2 == 2:
                    if w2 != 2:
                        raise ValueError(f"a dimension of tensor {name!r} is not a message")
                    d = dict((f3, v3) for f3, w3, v3 in proto_fields(dim) if w3 == 0)
                    dims.append(_signed64(d.get(1, 0)))
                    if dims[-1] < 0:
                        raise ValueError(f"tensor {name!r} has a negative dimension")
                elif f2 == 3 and val:
                    raise ValueError("tensor of unknown rank")
            shape = tuple(dims)
        elif field == 3:
            shard = val
        elif field == 4:
            offset = _signed64(val)
        elif field == 5:
            size = _signed64(val)
        elif field == 6:
            crc = val
        elif field == 7:
            raise ValueError("partitioned (sliced) variables are not supported")
    return BundleEntry(name, dtype, shape, shard, offset, size, crc)


def _read_block(raw: bytes, offset: int, size: int, what: str, path: Path) -> bytes:
    end = offset + size + 5
    if offset < 0 or end > len(raw):
        raise ModelFileError(f"{path} is truncated: its {what} block ends at byte {end}, the file has "
                             f"{len(raw)}.", "download or copy the model folder again.")
    block, kind = raw[offset:offset + size], raw[offset + size]
    stored = struct.unpack_from("<I", raw, offset + size + 1)[0]
    if unmask_crc(stored) != crc32c(raw[offset:offset + size + 1]):
        raise ModelFileError(f"{path}: the checksum of its {what} block does not match (the file is "
                             "damaged).", "download or copy the model folder again.")
    if kind != 0:
        raise ModelFileError(f"{path}: the {what} block is compressed (type {kind}); TF bundles never are.",
                             "pass the variables.index of a TensorFlow SavedModel or checkpoint.")
    return block


def _not_a_bundle(path) -> tuple[str, str]:
    return (f"{path} is a LevelDB-style table but not a TensorFlow tensor bundle (no header).",
            "pass the variables.index of a TensorFlow SavedModel or checkpoint.")


def _block_entries(block: bytes):
    """(key, value) pairs of one table block, undoing the prefix compression of the keys."""
    if len(block) < 4:
        raise ValueError("block shorter than its restart count")
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * n_restarts
    if limit < 0:
        raise ValueError("restart array larger than the block")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = _varint(block, pos)
        unshared, pos = _varint(block, pos)
        vlen, pos = _varint(block, pos)
        if shared > len(key) or pos + unshared + vlen > limit:
            raise ValueError("table entry runs past its block")
        if shared + unshared > MAX_KEY_BYTES:  # keys grown by prefix sharing: copying them would be quadratic
            raise ValueError(f"a tensor name longer than {MAX_KEY_BYTES} bytes")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + vlen]
        pos += vlen


def _resolve_prefix(path) -> Path:
    """Accept the SavedModel folder, its ``variables`` folder, the index file or the bare prefix."""
    p = Path(path).expanduser()
    if p.is_dir():
        # the variables/ folder itself, else a SavedModel folder (the error then names the missing index)
        p = p / "variables" if (p / "variables.index").exists() else p / "variables" / "variables"
    elif p.name.endswith(".index"):
        p = p.with_name(p.name[: -len(".index")])
    return p


class TensorBundle:
    """The tensors of a TF checkpoint, read lazily from its data shards (memory-mapped)."""

    def __init__(self, path):
        self.prefix = _resolve_prefix(path)
        self.index_path = self.prefix.with_name(self.prefix.name + ".index")
        if not self.index_path.is_file():
            raise ModelFileError(f"No TensorFlow checkpoint index at {self.index_path}.",
                                 "pass a SavedModel folder (with variables/variables.index inside).")
        size = self.index_path.stat().st_size
        if size > MAX_INDEX_BYTES:
            raise ModelFileError(f"{self.index_path} is {size >> 20} MB, far larger than a checkpoint index.",
                                 "pass the variables.index of a TensorFlow SavedModel or checkpoint.")
        raw = self.index_path.read_bytes()
        self.num_shards, self.entries = self._parse_index(raw)
        self._shards: dict[int, np.ndarray] = {}

    def _parse_index(self, raw: bytes) -> tuple[int, dict[str, BundleEntry]]:
        path = self.index_path
        if len(raw) < _FOOTER_LEN or struct.unpack_from("<Q", raw, len(raw) - 8)[0] != _TABLE_MAGIC:
            raise ModelFileError(
                f"{path} is not a TensorFlow checkpoint index (no table footer: the file is truncated or of "
                f"another kind, {len(raw)} bytes).", "download or copy the model folder again.")
        try:
            footer = raw[-_FOOTER_LEN:]
            _meta_off, pos = _varint(footer, 0)
            _meta_size, pos = _varint(footer, pos)
            idx_off, pos = _varint(footer, pos)
            idx_size, pos = _varint(footer, pos)
        except ValueError as err:
            raise ModelFileError(f"{path}: unreadable table footer ({err}).",
                                 "download or copy the model folder again.") from err
        index_block = _read_block(raw, idx_off, idx_size, "index", path)
        entries: dict[str, BundleEntry] = {}
        header = None
        seen_blocks: set = set()
        read_bytes = 0
        try:
            for _, handle in _block_entries(index_block):
                off, p = _varint(handle, 0)
                size, _ = _varint(handle, p)
                # each data block is read once, and all of them fit in the file: work stays linear in its size
                if (off, size) in seen_blocks:
                    raise ValueError(f"the index lists the data block at byte {off} twice")
                seen_blocks.add((off, size))
                read_bytes += size
                if read_bytes > len(raw):
                    raise ValueError("the data blocks add up to more than the file")
                for key, value in _block_entries(_read_block(raw, off, size, "data", path)):
                    if header is None and key != b"":
                        raise ModelFileError(*_not_a_bundle(path))
                    if key == b"":
                        header = dict((f, v) for f, _, v in proto_fields(value))
                    else:
                        name = key.decode("utf-8")
                        entries[name] = _parse_entry(name, value)
        except ModelFileError:
            raise
        except (ValueError, UnicodeDecodeError, struct.error, TypeError, OverflowError) as err:
            raise ModelFileError(f"{path}: malformed checkpoint index ({err}).",
                                 "download or copy the model folder again.") from err
        if header is None:
            raise ModelFileError(*_not_a_bundle(path))
        if header.get(2, 0) != 0:
            raise ModelFileError(f"{path} stores big-endian tensors, which are not supported.",
                                 "re-save the checkpoint on a little-endian machine.")
        shards = header.get(1, 1)
        if not isinstance(shards, int) or not 1 <= shards <= 10_000:
            raise ModelFileError(f"{path}: malformed checkpoint index (it names {shards!r} data shards).",
                                 "download or copy the model folder again.")
        return shards, entries

    # -- data -----------------------------------------------------------------------------------------
    def shard_path(self, shard: int) -> Path:
        return self.prefix.with_name(f"{self.prefix.name}.data-{shard:05d}-of-{self.num_shards:05d}")

    def _shard(self, shard: int) -> np.ndarray:
        if shard not in self._shards:
            p = self.shard_path(shard)
            if not p.is_file():
                raise ModelFileError(f"The checkpoint data file {p} is missing.",
                                     "copy the whole variables/ folder of the model.")
            self._shards[shard] = (np.memmap(p, dtype=np.uint8, mode="r") if p.stat().st_size
                                   else np.zeros(0, np.uint8))
        return self._shards[shard]

    def keys(self) -> list[str]:
        return list(self.entries)

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def get(self, name: str, verify: bool = True):
        """The tensor ``name`` as a numpy array (a list of bytes for string tensors), checksum verified."""
        if name not in self.entries:
            raise KeyError(name)
        e = self.entries[name]
        if e.shard >= self.num_shards:
            raise ModelFileError(f"{self.index_path}: tensor {name!r} points at shard {e.shard} of "
                                 f"{self.num_shards}.", "download or copy the model folder again.")
        if not 0 <= e.size <= MAX_TENSOR_BYTES:
            raise ModelFileError(f"{self.index_path}: tensor {name!r} claims {e.size} bytes, more than any "
                                 "DeepSpot weight.", "download or copy the model folder again.")
        data = self._shard(e.shard)
        if e.offset < 0 or e.offset + e.size > data.size:
            raise ModelFileError(
                f"{self.shard_path(e.shard)} is truncated: tensor {name!r} needs bytes {e.offset}.."
                f"{e.offset + e.size}, the file has {data.size}.", "download or copy the model folder again.")
        buf = data[e.offset:e.offset + e.size]
        try:
            crc_ok = not verify or e.crc32c is None or _entry_crc(e, buf) == unmask_crc(e.crc32c)
        except ValueError:
            crc_ok = False
        if not crc_ok:
            raise ModelFileError(f"{self.shard_path(e.shard)}: checksum mismatch for tensor {name!r} "
                                 "(the file is damaged).", "download or copy the model folder again.")
        return self._decode(e, buf)

    def _decode(self, e: BundleEntry, buf: np.ndarray):
        kind = e.numpy_dtype
        n = int(np.prod(e.shape, dtype=np.int64))
        if kind == "string":
            if n > e.size:  # every string takes at least its one-byte length: the shape is a lie
                raise ModelFileError(f"{self.index_path}: string tensor {e.name!r} claims {n} strings in {e.size} "
                                     "bytes.", "download or copy the model folder again.")
            try:
                return _decode_strings(bytes(buf), n)
            except ValueError as err:
                raise ModelFileError(f"{self.index_path}: string tensor {e.name!r} is malformed ({err}).",
                                     "download or copy the model folder again.") from err
        if kind == "?unknown":
            raise ModelFileError(f"{self.index_path}: tensor {e.name!r} has TF dtype {e.dtype}, which is not "
                                 "supported.", "only numeric and string tensors can be read.")
        if kind == "bfloat16":
            if n * 2 != e.size:
                raise ModelFileError(f"{self.index_path}: tensor {e.name!r} has {e.size} bytes, its shape "
                                     f"{e.shape} needs {n * 2}.", "download or copy the model folder again.")
            raw = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            return raw.view(np.float32).reshape(e.shape)
        dt = np.dtype(kind)
        if n * dt.itemsize != e.size:
            raise ModelFileError(f"{self.index_path}: tensor {e.name!r} has {e.size} bytes, its shape "
                                 f"{e.shape} and dtype need {n * dt.itemsize}.",
                                 "download or copy the model folder again.")
        return np.frombuffer(buf, dtype=dt).reshape(e.shape).astype(dt.newbyteorder("="), copy=True)


def _entry_crc(e: BundleEntry, buf: np.ndarray) -> int:
    """Numeric tensors: CRC of their bytes. Strings: the lengths count as uint32, not as stored varints."""
    if e.numpy_dtype != "string":
        return crc32c(buf)
    raw = bytes(buf)
    lengths, pos = _string_lengths(raw, int(np.prod(e.shape, dtype=np.int64)))
    crc = crc32c(b"".join(struct.pack("<I", ln & _M32) for ln in lengths))
    return crc32c(raw[pos:], crc)


def _string_lengths(buf: bytes, n: int) -> tuple[list[int], int]:
    lengths, pos = [], 0
    for _ in range(n):
        ln, pos = _varint(buf, pos)
        lengths.append(ln)
    return lengths, pos


def _decode_strings(buf: bytes, n: int) -> list[bytes]:
    lengths, pos = _string_lengths(buf, n)
    pos += 4  # masked CRC32C of the lengths, covered by the entry checksum already
    out = []
    for ln in lengths:
        out.append(buf[pos:pos + ln])
        pos += ln
    return out
