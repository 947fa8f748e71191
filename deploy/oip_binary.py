"""The Open Inference Protocol's binary tensor data extension, as Triton and ``tritonclient``
speak it: a JSON header of ``Inference-Header-Content-Length`` bytes followed by raw tensors
(BYTES elements as a 4-byte little-endian length then the bytes), in requests and answers."""

from __future__ import annotations

import json
import struct
from typing import Any

import numpy as np

HEADER = "inference-header-content-length"
_DTYPES = {"BOOL": "?", "UINT8": "<u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
           "INT8": "<i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2",
           "FP32": "<f4", "FP64": "<f8"}


def read_request(raw: bytes, header_length: str | None) -> dict[str, Any]:
    """The request's JSON with every binary input's ``data`` filled in (flat, row-major)."""
    if header_length is None:
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError("the request must be a JSON object")
        return body
    size = int(header_length)
    if not 0 < size <= len(raw):
        raise ValueError(f"{HEADER} {size} does not fit a {len(raw)}-byte body")
    body = json.loads(raw[:size])
    offset = size
    for tensor in body.get("inputs") or []:
        length = (tensor.get("parameters") or {}).get("binary_data_size")
        if length is None:
            continue
        if offset + int(length) > len(raw):
            raise ValueError(f"input '{tensor.get('name')}' runs past the end of the body")
        tensor["data"] = decode(raw[offset:offset + int(length)], tensor["datatype"])
        offset += int(length)
    if offset != len(raw):
        raise ValueError(f"{len(raw) - offset} bytes after the last binary input")
    return body


def decode(chunk: bytes, datatype: str) -> list[Any]:
    if datatype == "BYTES":
        out: list[Any] = []
        at = 0
        while at < len(chunk):
            if at + 4 > len(chunk):
                raise ValueError("truncated BYTES element length")
            (n,) = struct.unpack_from("<I", chunk, at)
            if at + 4 + n > len(chunk):
                raise ValueError("truncated BYTES element")
            out.append(chunk[at + 4:at + 4 + n].decode())  # text in: UTF-8 or a 400
            at += 4 + n
        return out
    if datatype not in _DTYPES:
        raise ValueError(f"unsupported datatype {datatype!r}")
    return list(np.frombuffer(chunk, dtype=_DTYPES[datatype]).tolist())


def encode(data: list[Any], datatype: str) -> bytes:
    if datatype == "BYTES":
        parts = []
        for item in data:
            blob = item if isinstance(item, bytes) else str(item).encode()
            parts.append(struct.pack("<I", len(blob)) + blob)
        return b"".join(parts)
    return np.asarray(data, dtype=_DTYPES[datatype]).tobytes()


def write_response(result: dict[str, Any], request: dict[str, Any]
                   ) -> tuple[bytes, dict[str, str]]:
    """The answer's body and headers: only the ``outputs`` asked for (all when none are), as
    binary where the request asks for it (``binary_data`` per output, or
    ``binary_data_output``), else as JSON."""
    asked = request.get("outputs") or []
    everything_binary = bool((request.get("parameters") or {}).get("binary_data_output"))
    outputs = result["outputs"]
    if asked:
        by_name = {o["name"]: o for o in outputs}
        missing = [a.get("name") for a in asked if a.get("name") not in by_name]
        if missing:
            raise ValueError(f"unknown output(s) {missing}; this model has {sorted(by_name)}")
        wanted = {a["name"]: bool((a.get("parameters") or {}).get("binary_data",
                                                                   everything_binary))
                  for a in asked}
        outputs = [o for o in outputs if o["name"] in wanted]
    else:
        wanted = {o["name"]: everything_binary for o in outputs}
    blobs: list[bytes] = []
    header_outputs = []
    for output in outputs:
        if not wanted[output["name"]]:
            header_outputs.append(output)
            continue
        blob = encode(output["data"], output["datatype"])
        blobs.append(blob)
        header_outputs.append({k: v for k, v in output.items() if k != "data"}
                              | {"parameters": {"binary_data_size": len(blob)}})
    header = json.dumps({**result, "outputs": header_outputs}).encode()
    if not blobs:
        return header, {"content-type": "application/json"}
    return header + b"".join(blobs), {"content-type": "application/octet-stream",
                                      HEADER: str(len(header))}
