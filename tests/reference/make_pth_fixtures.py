"""Writes tests/fixtures/checkpoints/dtypes_views.pth and its expected values.

Run from the repository root: `/work/ref/bin/python tests/reference/make_pth_fixtures.py`.

The .pth is what `torch.save` writes for a checkpoint `{"model": state_dict, "epoch": 3,
"meta": {...}}` whose state dict holds every storage type torch writes with
`_rebuild_tensor_v2` (float64/32/16, bfloat16, int64/32/16/8, uint8, bool), a `uint16` tensor
(written with `_rebuild_tensor_v3` and an untyped storage), views that are not contiguous
(a transpose, a permutation, a strided slice with a storage offset), a tensor stored twice
(tied weights), an `nn.Parameter`, an empty tensor and a 0-d tensor, next to metadata of plain
Python values (floats, strings, bytes, lists, None). `dtypes_views_expected.safetensors` holds
each tensor's values as float64 in its logical (row-major) order, and `dtypes_views_expected.json`
the candle dtype the reader should give each one.
"""

import json
import os

import torch
from safetensors.torch import save_file

OUT = os.path.join("tests", "fixtures", "checkpoints")


def main():
    g = torch.Generator().manual_seed(20261206)
    base = torch.randn(4, 6, generator=g)
    sd = {
        "f64": torch.randn(3, generator=g, dtype=torch.float64),
        "f32": torch.randn(2, 3, generator=g),
        "f16": torch.randn(5, generator=g).half(),
        "bf16": torch.randn(2, 2, generator=g).bfloat16(),
        "i64_offset": torch.arange(10, dtype=torch.int64)[3:7],
        "i32": torch.tensor([-5, 0, 7], dtype=torch.int32),
        "i16": torch.tensor([-300, 2], dtype=torch.int16),
        "i8": torch.tensor([-128, 5, 127], dtype=torch.int8),
        "u8": torch.tensor([0, 200, 255], dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "u16": torch.tensor([1, 65535], dtype=torch.uint16),
        "transposed": base.t(),
        "permuted": torch.randn(2, 3, 4, generator=g).permute(2, 0, 1),
        "strided_slice": base[1:, ::2],
        "tied_a": base,
        "tied_b": base,
        "param": torch.nn.Parameter(torch.randn(3, generator=g)),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(2.5),
    }
    meta = {"lr": 0.1, "name": "x", "list": [1, 2.5, None, True], "bytes": b"\x00\x01", "big": 2**70}
    torch.save({"model": sd, "epoch": 3, "meta": meta}, os.path.join(OUT, "dtypes_views.pth"))
    expected = {k: v.detach().to(torch.float64).contiguous() for k, v in sd.items()}
    save_file(expected, os.path.join(OUT, "dtypes_views_expected.safetensors"))
    candle = {"float64": "f64", "float32": "f32", "float16": "f16", "bfloat16": "bf16", "int64": "i64",
              "int32": "i32", "int16": "i16", "int8": "i16", "uint8": "u8", "bool": "u8", "uint16": "u32"}
    dtypes = {k: candle[str(v.dtype).removeprefix("torch.")] for k, v in sd.items()}
    with open(os.path.join(OUT, "dtypes_views_expected.json"), "w") as f:
        json.dump(dtypes, f, indent=1, sort_keys=True)
    print({k: (tuple(v.shape), tuple(v.stride()), v.storage_offset()) for k, v in sd.items()})


if __name__ == "__main__":
    main()
