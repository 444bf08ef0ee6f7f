"""The two formats a TF tensor bundle's index file is made of: protobuf wire records (decoded by hand: the
handful of fields we need) and a LevelDB-style table (a footer, an index block, prefix-compressed data blocks,
each block checksummed). :mod:`.tf_bundle` reads the bundle's entries and tensors through them.
"""

from __future__ import annotations

import struct
from pathlib import Path

from ..errors import ModelFileError
from .checksums import crc32c, unmask_crc


# -- protobuf wire format: just enough to read (and, in the tests, write) the bundle records ------------------
def varint(buf: bytes, pos: int) -> tuple[int, int]:
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
        key, pos = varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == 0:
            val, pos = varint(buf, pos)
        elif wire == 1:
            val = struct.unpack_from("<Q", buf, pos)[0]
            pos += 8
        elif wire == 2:
            ln, pos = varint(buf, pos)
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


def signed64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


# -- LevelDB-style table -------------------------------------------------------------------------------------
FOOTER_LEN = 48
TABLE_MAGIC = 0xDB4775248B80FB57
#: what a crafted index may make us do: DeepSpot's index is 20 KB with ~100 tensors
MAX_KEY_BYTES = 4096


def index_handle(raw: bytes) -> tuple[int, int]:
    """(offset, size) of the index block, from the table's footer (after the metaindex's handle); ValueError
    when the footer is malformed."""
    footer = raw[-FOOTER_LEN:]
    _meta_off, pos = varint(footer, 0)
    _meta_size, pos = varint(footer, pos)
    idx_off, pos = varint(footer, pos)
    idx_size, _ = varint(footer, pos)
    return idx_off, idx_size


def index_block(raw: bytes, path: Path) -> bytes:
    """The table's index block (its footer and the block's checksum checked)."""
    if len(raw) < FOOTER_LEN or struct.unpack_from("<Q", raw, len(raw) - 8)[0] != TABLE_MAGIC:
        raise ModelFileError(
            f"{path} is not a TensorFlow checkpoint index (no table footer: the file is truncated or of "
            f"another kind, {len(raw)} bytes).", "download or copy the model folder again.")
    try:
        idx_off, idx_size = index_handle(raw)
    except ValueError as err:
        raise ModelFileError(f"{path}: unreadable table footer ({err}).",
                             "download or copy the model folder again.") from err
    return read_block(raw, idx_off, idx_size, "index", path)


def table_items(raw: bytes, index: bytes, path: Path):
    """(key, value) of every data block the ``index`` block lists, in order; ValueError when malformed."""
    seen_blocks: set = set()
    read_bytes = 0
    for _, handle in block_entries(index):
        off, p = varint(handle, 0)
        size, _ = varint(handle, p)
        # each data block is read once, and all of them fit in the file: work stays linear in its size
        if (off, size) in seen_blocks:
            raise ValueError(f"the index lists the data block at byte {off} twice")
        seen_blocks.add((off, size))
        read_bytes += size
        if read_bytes > len(raw):
            raise ValueError("the data blocks add up to more than the file")
        yield from block_entries(read_block(raw, off, size, "data", path))


def read_block(raw: bytes, offset: int, size: int, what: str, path: Path) -> bytes:
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


def block_entries(block: bytes):
    """(key, value) pairs of one table block, undoing the prefix compression of the keys."""
    if len(block) < 4:
        raise ValueError("block shorter than its restart count")
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * n_restarts
    if limit < 0:
        raise ValueError("restart array larger than the block")
    pos, key = 0, b""
    while pos < limit:
        shared, pos = varint(block, pos)
        unshared, pos = varint(block, pos)
        vlen, pos = varint(block, pos)
        if shared > len(key) or pos + unshared + vlen > limit:
            raise ValueError("table entry runs past its block")
        if shared + unshared > MAX_KEY_BYTES:  # keys grown by prefix sharing: copying them would be quadratic
            raise ValueError(f"a tensor name longer than {MAX_KEY_BYTES} bytes")
        key = key[:shared] + block[pos:pos + unshared]
        pos += unshared
        yield key, block[pos:pos + vlen]
        pos += vlen
