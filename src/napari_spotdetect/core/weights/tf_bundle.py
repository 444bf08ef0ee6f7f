"""TensorFlow checkpoint "tensor bundles" read with numpy alone (``tests/tf_bundle_writer.py`` writes them).

DeepSpot's weights exist only as a TF SavedModel. Its ``variables/`` folder is a tensor bundle: an index
file (a LevelDB-format table mapping tensor names to small protobuf records) and data shards holding the
raw little-endian tensors. The index's formats are read by :mod:`.tf_table` (protobuf fields decoded by hand)
and every block and tensor is checked against the masked CRC32C the format stores (:mod:`.checksums`), so a
truncated or damaged download is reported, not silently loaded. Neither TensorFlow nor the protobuf package is
needed. Here: the bundle's entries, and its tensors read from the data shards.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ModelFileError
from .checksums import M32, crc32c, unmask_crc
from .tf_table import index_block, proto_fields, signed64, table_items, varint

#: TF DataType enum -> numpy dtype ("string" handled apart; bfloat16 widened to float32 on read)
DTYPES = {1: "<f4", 2: "<f8", 3: "<i4", 4: "u1", 5: "<i2", 6: "i1", 7: "string", 9: "<i8", 10: "?",
          14: "bfloat16", 17: "<u2", 19: "<f2", 22: "<u4", 23: "<u8"}
_DTYPE_CODES = {np.dtype(v): k for k, v in DTYPES.items() if v not in ("string", "bfloat16")}


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
                    dims.append(signed64(d.get(1, 0)))
                    if dims[-1] < 0:
                        raise ValueError(f"tensor {name!r} has a negative dimension")
                elif f2 == 3 and val:
                    raise ValueError("tensor of unknown rank")
            shape = tuple(dims)
        elif field == 3:
            shard = val
        elif field == 4:
            offset = signed64(val)
        elif field == 5:
            size = signed64(val)
        elif field == 6:
            crc = val
        elif field == 7:
            raise ValueError("partitioned (sliced) variables are not supported")
    return BundleEntry(name, dtype, shape, shard, offset, size, crc)


def _not_a_bundle(path) -> tuple[str, str]:
    return (f"{path} is a LevelDB-style table but not a TensorFlow tensor bundle (no header).",
            "pass the variables.index of a TensorFlow SavedModel or checkpoint.")


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
        index = index_block(raw, path)
        entries: dict[str, BundleEntry] = {}
        header = None
        try:
            for key, value in table_items(raw, index, path):
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
    crc = crc32c(b"".join(struct.pack("<I", ln & M32) for ln in lengths))
    return crc32c(raw[pos:], crc)


def _string_lengths(buf: bytes, n: int) -> tuple[list[int], int]:
    lengths, pos = [], 0
    for _ in range(n):
        ln, pos = varint(buf, pos)
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
