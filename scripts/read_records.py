#!/usr/bin/env python3
"""Reads medseg record shards (*.medrec) with numpy alone.

A shard file is medseg records back to back; each record holds one preprocessed case. The byte
layout is documented in src/io/medseg_record.h and the README ("medseg records"). Usage:

    python3 scripts/read_records.py FILE [FILE ...]     # prints one summary line per record

    import read_records
    for case in read_records.iter_records("train-000.medrec"):
        case["case_id"]                 # str
        case["image"]                   # float32 ndarray [C, X, Y, Z] (float16 records widened)
        case["label"]                   # uint8 ndarray [L, X, Y, Z] (L = 0 when unlabelled)
        case["affine"]                  # float64 4x4, voxel -> world (mm) of this grid
        case["original_spatial_shape"]  # (X, Y, Z) of the source NIfTI
        case["original_affine"]         # float64 4x4 of the source NIfTI

Checksums (zlib CRC-32) are verified unless verify=False; a corrupt, truncated or foreign file
raises RecordError naming the file, the record index and its byte offset.
"""

import struct
import sys
import zlib

import numpy as np

MAGIC = b"MEDSEGRC"
END_MAGIC = b"MEND"
VERSION = 1
FIXED_HEADER_BYTES = 400
TRAILER_BYTES = 16
IMAGE_DTYPES = {1: np.dtype("<f2"), 2: np.dtype("<f4")}
# Fixed header fields from offset 0 to 396 (see src/io/medseg_record.h).
HEADER = struct.Struct("<8sIIQIIII3qqqQQQQ16d3q16dI")
assert HEADER.size == 396


class RecordError(ValueError):
    """A malformed, truncated or corrupt record."""


def _round_up(value, alignment=64):
    return (value + alignment - 1) // alignment * alignment


def iter_records(path, verify=True):
    """Yields each record of the shard file at `path` as a dict (see the module docstring)."""
    data = np.memmap(path, dtype=np.uint8, mode="r") if _size(path) else np.zeros(0, np.uint8)
    offset, index = 0, 0
    while offset < len(data):
        where = f"{path}: record {index} at byte offset {offset}"
        if len(data) - offset < FIXED_HEADER_BYTES:
            raise RecordError(f"{where}: truncated record")
        fields = HEADER.unpack_from(data, offset)
        (magic, version, header_bytes, record_bytes, case_id_bytes, image_dtype, label_dtype,
         _flags) = fields[:8]
        shape = fields[8:11]
        image_channels, label_channels = fields[11:13]
        image_offset, image_bytes, label_offset, label_bytes = fields[13:17]
        affine = np.array(fields[17:33], dtype=np.float64).reshape(4, 4)
        original_shape = tuple(fields[33:36])
        original_affine = np.array(fields[36:52], dtype=np.float64).reshape(4, 4)
        if magic != MAGIC:
            raise RecordError(f"{where}: bad magic {magic!r}, expected {MAGIC!r}")
        if version != VERSION:
            raise RecordError(f"{where}: unsupported record version {version}")
        if not 0 < case_id_bytes <= 4096 or header_bytes > len(data) - offset:
            raise RecordError(f"{where}: corrupt or truncated header")
        header_crc = struct.unpack_from("<I", data, offset + 396)[0]
        case_id_raw = bytes(data[offset + 400:offset + 400 + case_id_bytes])
        if verify and zlib.crc32(case_id_raw, zlib.crc32(bytes(data[offset:offset + 396]))) \
                != header_crc:
            raise RecordError(f"{where}: header checksum mismatch")
        if image_dtype not in IMAGE_DTYPES or label_dtype != 0:
            raise RecordError(f"{where}: unknown dtype codes {image_dtype}/{label_dtype}")
        if record_bytes > len(data) - offset:
            raise RecordError(f"{where}: truncated record ({record_bytes} bytes needed, "
                              f"{len(data) - offset} left)")
        trailer = offset + record_bytes - TRAILER_BYTES
        stored_size, payload_crc, end_magic = struct.unpack_from("<QI4s", data, trailer)
        if stored_size != record_bytes or end_magic != END_MAGIC:
            raise RecordError(f"{where}: bad end marker (truncated or corrupt)")
        if verify and zlib.crc32(data[offset + header_bytes:trailer]) != payload_crc:
            raise RecordError(f"{where}: payload checksum mismatch (corrupt data)")

        voxels = shape[0] * shape[1] * shape[2]
        dtype = IMAGE_DTYPES[image_dtype]
        if image_bytes != image_channels * voxels * dtype.itemsize or \
                label_bytes != label_channels * voxels:
            raise RecordError(f"{where}: payload sizes disagree with the shape")
        start = offset + image_offset
        image = data[start:start + image_bytes].view(dtype).reshape((image_channels,) + shape)
        start = offset + label_offset
        label = data[start:start + label_bytes].reshape((label_channels,) + shape)
        yield {
            "case_id": case_id_raw.decode("utf-8"),
            "image": image.astype(np.float32),  # a copy, independent of the mapping
            "label": np.array(label, dtype=np.uint8),
            "image_dtype": dtype.name,  # how it was stored: float16 or float32
            "affine": affine,
            "original_spatial_shape": original_shape,
            "original_affine": original_affine,
        }
        offset += record_bytes
        index += 1


def _size(path):
    with open(path, "rb") as f:
        return f.seek(0, 2)


def main(paths):
    if not paths:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    try:
        for path in paths:
            for index, case in enumerate(iter_records(path)):
                image, label = case["image"], case["label"]
                print(f"{path} #{index}: {case['case_id']} image {list(image.shape)} "
                      f"({case['image_dtype']}, min {image.min():.3f} max {image.max():.3f}) "
                      f"label {list(label.shape)} ({int(label.sum())} voxels set) "
                      f"original shape {list(case['original_spatial_shape'])}")
    except (RecordError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
