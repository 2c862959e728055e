"""Writes a Caffe `NetParameter` (.caffemodel) holding given per-layer blobs:
the tests' source of .caffemodel files for `dream_jax.model.weights.caffe_proto`.

Field numbers are from caffe.proto: those the reader lists, plus
NetParameter name = 1, LayerParameter type = 2 (string) and
V1LayerParameter type = 5 (enum: 4 = CONVOLUTION, 14 = INNER_PRODUCT).
"""
from __future__ import annotations

import numpy as np

_VARINT, _BYTES = 0, 2


def _key(field: int, wire: int) -> bytes:
    return _encode_varint(field << 3 | wire)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _bytes_field(field: int, payload: bytes) -> bytes:
    return _key(field, _BYTES) + _encode_varint(len(payload)) + payload


def _encode_blob(array: np.ndarray, legacy_shape: bool) -> bytes:
    if legacy_shape:  # num/channels/height/width, right-aligned like old Caffe
        dims = (1,) * (4 - array.ndim) + tuple(array.shape)
        shape = b"".join(_key(f, _VARINT) + _encode_varint(d) for f, d in zip((1, 2, 3, 4), dims))
    else:
        packed = b"".join(_encode_varint(d) for d in array.shape)
        shape = _bytes_field(7, _bytes_field(1, packed))
    return shape + _bytes_field(5, np.ascontiguousarray(array, dtype="<f4").tobytes())


def write_net(layers: dict[str, list[np.ndarray]], types: dict[str, str],
              legacy: bool = False, name: str = "GoogleNet") -> bytes:
    """Serialise a NetParameter holding these layers' blobs. `legacy` writes the
    V1 `layers` field (type as V1 enum: 4 = CONVOLUTION, 14 = INNER_PRODUCT)."""
    v1_types = {"Convolution": 4, "InnerProduct": 14}
    out = [_bytes_field(1, name.encode())]
    for layer, blobs in layers.items():
        blob_bytes = [_encode_blob(b, legacy) for b in blobs]
        if legacy:
            body = (_bytes_field(4, layer.encode()) + _key(5, _VARINT)
                    + _encode_varint(v1_types[types[layer]])
                    + b"".join(_bytes_field(6, b) for b in blob_bytes))
            out.append(_bytes_field(2, body))
        else:
            body = (_bytes_field(1, layer.encode()) + _bytes_field(2, types[layer].encode())
                    + b"".join(_bytes_field(7, b) for b in blob_bytes))
            out.append(_bytes_field(100, body))
    return b"".join(out)

