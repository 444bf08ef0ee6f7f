"""A writer of TensorFlow checkpoint bundles (``.index`` + data shards), so tests build their own checkpoints.

The package only reads bundles (:mod:`napari_spotdetect.core.weights.tf_bundle`); writing them is test-only, so it
lives here, next to the tests that use it.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from napari_spotdetect.core.weights.checksums import crc32c, mask_crc
from napari_spotdetect.core.weights.tf_bundle import _DTYPE_CODES
from napari_spotdetect.core.weights.tf_table import TABLE_MAGIC


def enc_varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def enc_field(field: int, value, wire: int) -> bytes:
    key = enc_varint(field << 3 | wire)
    if wire == 0:
        return key + enc_varint(value)
    if wire == 2:
        return key + enc_varint(len(value)) + value
    if wire == 5:
        return key + struct.pack("<I", value)
    raise ValueError(wire)


def enc_entry(dtype: int, shape, shard: int, offset: int, size: int, crc: int) -> bytes:
    dims = b"".join(enc_field(2, enc_field(1, int(d), 0), 2) for d in shape)
    out = enc_field(1, dtype, 0) + enc_field(2, dims, 2)
    if shard:
        out += enc_field(3, shard, 0)
    if offset:
        out += enc_field(4, offset, 0)
    if size:
        out += enc_field(5, size, 0)
    return out + enc_field(6, crc, 5)


def enc_block(items, restart_interval: int = 16) -> bytes:
    out, restarts, prev = bytearray(), [], b""
    for i, (key, value) in enumerate(items):
        shared = 0
        if i % restart_interval:
            while shared < min(len(prev), len(key)) and prev[shared] == key[shared]:
                shared += 1
        else:
            restarts.append(len(out))
        out += enc_varint(shared) + enc_varint(len(key) - shared) + enc_varint(len(value))
        out += key[shared:] + value
        prev = key
    restarts = restarts or [0]
    out += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def append_block(f, block: bytes) -> bytes:
    """Write block + trailer; return its handle."""
    off = f.tell()
    f.write(block + b"\0" + struct.pack("<I", mask_crc(crc32c(block + b"\0"))))
    return enc_varint(off) + enc_varint(len(block))


def write_bundle(prefix, tensors: dict, num_shards: int = 1) -> Path:
    """Write numeric numpy ``tensors`` as ``<prefix>.index`` + data shards (round-robin over shards)."""
    prefix = Path(prefix)
    prefix.parent.mkdir(parents=True, exist_ok=True)
    records = []
    shard_files = [open(prefix.with_name(f"{prefix.name}.data-{s:05d}-of-{num_shards:05d}"), "wb")
                   for s in range(num_shards)]
    try:
        for i, name in enumerate(tensors):  # data in insertion order, index sorted (as TF does)
            arr = np.asarray(tensors[name])  # (not ascontiguousarray: it turns scalars into shape (1,))
            code = _DTYPE_CODES.get(arr.dtype.newbyteorder("<")) or _DTYPE_CODES.get(arr.dtype)
            if code is None:
                raise ValueError(f"cannot write dtype {arr.dtype}")
            data = arr.astype(arr.dtype.newbyteorder("<")).tobytes(order="C")
            shard = i % num_shards
            f = shard_files[shard]
            off = f.tell()
            f.write(data)
            records.append((name.encode(), enc_entry(code, arr.shape, shard, off, len(data),
                                                      mask_crc(crc32c(data)))))
    finally:
        for f in shard_files:
            f.close()
    header = enc_field(1, num_shards, 0) + enc_field(3, enc_field(1, 1, 0), 2)
    items = [(b"", header)] + sorted(records)
    with open(prefix.with_name(prefix.name + ".index"), "wb") as f:
        data_handle = append_block(f, enc_block(items))
        meta_handle = append_block(f, enc_block([]))
        index_handle = append_block(f, enc_block([(items[-1][0] + b"\0", data_handle)]))
        footer = meta_handle + index_handle
        f.write(footer + b"\0" * (40 - len(footer)) + struct.pack("<Q", TABLE_MAGIC))
    return prefix
