"""Just enough of the protobuf wire format to read the learned blobs of a
Caffe `NetParameter` (.caffemodel).

A hand-written reader of a few field numbers instead of generated protobuf
code: no dependency, no code from the file is ever executed, and malformed
input is a `ValueError` with a reason. Field numbers are from caffe.proto:
  NetParameter:     layer = 100 (LayerParameter), layers = 2 (V1LayerParameter)
  LayerParameter:   name = 1, blobs = 7
  V1LayerParameter: name = 4, blobs = 6
  BlobProto:        shape = 7 (BlobShape: dim = 1), data = 5 (float),
                    num/channels/height/width = 1/2/3/4 (legacy 4-D shape)
"""
from __future__ import annotations

from typing import Iterator

import numpy as np

_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5
_LAYER_FIELDS = {100: (1, 7), 2: (4, 6)}  # container field -> (name field, blobs field)


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def _fields(buf: memoryview) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value): int for varints/fixed, memoryview for bytes."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, pos = _varint(buf, pos)
        elif wire == _BYTES:
            size, pos = _varint(buf, pos)
            if pos + size > len(buf):
                raise ValueError("truncated length-delimited field")
            value, pos = buf[pos:pos + size], pos + size
        elif wire in (_FIXED32, _FIXED64):
            size = 4 if wire == _FIXED32 else 8
            if pos + size > len(buf):
                raise ValueError("truncated fixed-width field")
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        yield field, wire, value


def _blob(buf: memoryview) -> np.ndarray:
    dims: list[int] = []
    legacy = {1: 1, 2: 1, 3: 1, 4: 1}
    chunks: list[np.ndarray] = []
    for field, wire, value in _fields(buf):
        if field == 7 and wire == _BYTES:  # BlobShape
            for f, w, v in _fields(value):
                if f == 1 and w == _BYTES:  # packed
                    p = 0
                    while p < len(v):
                        d, p = _varint(v, p)
                        dims.append(d)
                elif f == 1 and w == _VARINT:
                    dims.append(v)
        elif field == 5 and wire == _BYTES:  # packed floats
            chunks.append(np.frombuffer(value, dtype="<f4"))
        elif field == 5 and wire == _FIXED32:  # unpacked float
            chunks.append(np.frombuffer(value, dtype="<f4"))
        elif field in legacy and wire == _VARINT:
            legacy[field] = value
    data = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
    shape = tuple(dims) if dims else tuple(legacy[i] for i in (1, 2, 3, 4))
    if int(np.prod(shape)) != data.size:
        raise ValueError(f"blob declares shape {shape} but holds {data.size} values")
    return data.reshape(shape)


def read_blobs(data: bytes) -> dict[str, list[np.ndarray]]:
    """{layer name: [blob arrays in Caffe's (out, in, kH, kW) layout]} for every
    layer that has learned blobs, from either the `layer` or legacy `layers` field."""
    layers: dict[str, list[np.ndarray]] = {}
    for field, wire, value in _fields(memoryview(data)):
        if field not in _LAYER_FIELDS or wire != _BYTES:
            continue
        name_field, blobs_field = _LAYER_FIELDS[field]
        name, blobs = None, []
        for f, w, v in _fields(value):
            if f == name_field and w == _BYTES:
                name = bytes(v).decode("utf-8", "replace")
            elif f == blobs_field and w == _BYTES:
                blobs.append(_blob(v))
        if name is not None and blobs:
            layers[name] = blobs
    return layers
