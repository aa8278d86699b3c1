"""Reading and writing state-dict files: `.safetensors` (here, numpy only), `.pth` (torch,
imported inside the functions that need it) and detectron2's pickles (reading pickles, with
stand-ins for classes we do not import, is `haiku.load`).

Why safetensors without the `safetensors` package: the format is one little-endian u64 header
length, a JSON header {name: {"dtype", "shape", "data_offsets"}} and the raw bytes, ~40 lines of
numpy; no new dependency for the library. The tests read and write our files with the real
`safetensors` package (in the test extra through timm), so the two are checked against each other.
"""
from __future__ import annotations

import json
import pickle
import struct
from typing import Any, Dict

import numpy as np

from simclr_jax.errors import UserError
from simclr_jax.workdir import as_path

ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
             "I32": np.int32, "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}
ST_NAMES = {np.dtype(v): k for k, v in ST_DTYPES.items()}


def save_safetensors(path: str, state_dict: Dict[str, np.ndarray],
                     metadata: Dict[str, str] | None = None) -> None:
    header: Dict[str, Any] = {"__metadata__": dict(metadata or {})} if metadata else {}
    offset, blobs = 0, []
    for name in sorted(state_dict):
        a = np.ascontiguousarray(state_dict[name])
        if a.dtype not in ST_NAMES:
            raise UserError(f"{name}: dtype {a.dtype} cannot be written to safetensors")
        data = a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": ST_NAMES[a.dtype], "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)                       # the format aligns the data to 8 bytes
    with as_path(path).open("wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw)
        for data in blobs:
            f.write(data)


def load_safetensors(path: str) -> Dict[str, np.ndarray]:
    raw = as_path(path).read_bytes()
    try:
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n])
        body = raw[8 + n:]
        out = {}
        for name, info in header.items():
            if name == "__metadata__":
                continue
            begin, end = info["data_offsets"]
            if end > len(body):
                raise ValueError(f"{name} ends at byte {end}, the file's data has {len(body)}")
            if info["dtype"] == "BF16":    # float32 with the low 16 bits dropped
                u16 = np.frombuffer(body[begin:end], "<u2").astype(np.uint32) << 16
                out[name] = u16.view(np.float32).reshape(info["shape"])
            else:
                out[name] = np.frombuffer(body[begin:end], ST_DTYPES[info["dtype"]]).reshape(
                    info["shape"]).copy()
        return out
    except (ValueError, KeyError, TypeError, struct.error, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not a readable .safetensors file (truncated?): {e}") from None


def _torch():
    try:
        import torch
    except ImportError:
        raise UserError("reading or writing a .pth file needs PyTorch: pip install torch "
                        "(or use .safetensors)") from None
    return torch


def _to_numpy(obj):
    """Tensors -> float32/int numpy arrays, recursively through dicts, lists and tuples."""
    torch = _torch()
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu()
        return (t.float() if t.is_floating_point() else t).numpy()
    if isinstance(obj, dict):
        return {k: _to_numpy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_numpy(v) for v in obj)
    return obj


def load_pth(path: str) -> Any:
    """torch.load with weights_only=True (no code runs from the file), tensors -> numpy.

    argparse.Namespace is allowed: DINO and others save their `args` next to the weights."""
    torch = _torch()
    import argparse
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            with as_path(path).open("rb") as f:
                obj = torch.load(f, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, EOFError, UnpicklingError, ... for junk
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise UserError(f"{path} cannot be read as a PyTorch checkpoint (truncated, or not a "
                        f"checkpoint): {first}") from None
    return _to_numpy(obj)


def save_pth(path: str, state_dict: Dict[str, np.ndarray]) -> None:
    torch = _torch()
    with as_path(path).open("wb") as f:
        torch.save({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state_dict.items()},
                   f)


def save_pickle(path: str, obj: Any) -> None:
    with as_path(path).open("wb") as f:
        pickle.dump(obj, f)
