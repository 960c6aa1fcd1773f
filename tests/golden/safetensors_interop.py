# The Python side of the safetensors check (scripts/checkpoint_interop.sh runs both sides where
# Python has torch and safetensors, the GPU machines):
#   python3 tests/golden/safetensors_interop.py DIR
# DIR was written by `acc_dist_worker interop-write DIR` (tests/dist/interop.cpp). This reads
# DIR/cpp/dtypes.safetensors, DIR/cpp/model.safetensors (acc's save_model), DIR/cpp_sharded (its
# shards and model.safetensors.index.json, read as transformers reads them: the index's weight_map,
# then each file) and DIR/checkpoint/model.safetensors (acc's save_state) with safetensors and
# compares them with the formulas, then writes DIR/python/{dtypes,model}.safetensors from the same
# formulas with safetensors.torch.save_file for `acc_dist_worker interop-read DIR/python`.
import json
import pathlib
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def expected_dtypes():
    # k = (7 i) mod 23 over the flat index i: floats (k - 11) / 8, signed integers k - 11,
    # U8 k + 200, BOOL i mod 3 == 0 (interop.cpp's expected_dtypes)
    i = torch.arange(24, dtype=torch.int64).reshape(2, 3, 4)
    k = (i * 7) % 23
    tensors = {}
    for name, dtype in [("F64", torch.float64), ("F32", torch.float32), ("F16", torch.float16), ("BF16", torch.bfloat16)]:
        tensors[name] = ((k - 11).to(torch.float64) / 8).to(dtype)
    for name, dtype in [("I64", torch.int64), ("I32", torch.int32), ("I16", torch.int16), ("I8", torch.int8)]:
        tensors[name] = (k - 11).to(dtype)
    tensors["U8"] = (k + 200).to(torch.uint8)
    tensors["BOOL"] = (i % 3) == 0
    tensors["I64_big"] = torch.tensor([1 << 40, -(1 << 62), (1 << 62) + 3], dtype=torch.int64)
    tensors["scalar"] = torch.tensor(0.5, dtype=torch.float32)
    tensors["empty"] = torch.zeros(0, 3, dtype=torch.float32)
    return tensors


def expected_model():
    # fc1 = Linear(4, 3), fc2 = Linear(3, 2); element i of parameter `name`:
    # ((5 i + len(name)) mod 17 - 8) / 16 (interop.cpp's expected_parameter)
    shapes = {"fc1.weight": (3, 4), "fc1.bias": (3,), "fc2.weight": (2, 3), "fc2.bias": (2,)}
    model = {}
    for name, shape in shapes.items():
        i = torch.arange(torch.Size(shape).numel(), dtype=torch.int64)
        model[name] = (((i * 5 + len(name)) % 17 - 8).to(torch.float32) / 16).reshape(shape)
    return model


def check(path, expected, metadata):
    loaded = load_file(str(path))
    problems = []
    if sorted(loaded) != sorted(expected):
        problems.append(f"names {sorted(loaded)} != {sorted(expected)}")
    for name, want in expected.items():
        got = loaded.get(name)
        if got is None or got.dtype != want.dtype or got.shape != want.shape or not torch.equal(got, want):
            problems.append(f"{name}: {None if got is None else (got.dtype, tuple(got.shape), got.flatten()[:6])}")
    with safe_open(str(path), framework="pt") as f:
        found = f.metadata()
    if found != metadata:
        problems.append(f"metadata {found} != {metadata}")
    print(f"python: {path}: {len(loaded)} tensors, metadata {found}: {'OK' if not problems else 'MISMATCH'}")
    for p in problems:
        print(f"  {p}")
    return not problems


def check_sharded(directory, expected):
    index = json.loads((directory / "model.safetensors.index.json").read_text())
    files = sorted(set(index["weight_map"].values()))
    problems = []
    if files != ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"]:
        problems.append(f"files {files}")
    loaded = {}
    for name in files:
        loaded.update(load_file(str(directory / name)))
    for name, file in index["weight_map"].items():
        with safe_open(str(directory / file), framework="pt") as f:
            if name not in f.keys():
                problems.append(f"{name} is not in {file}")
    total = sum(t.numel() * t.element_size() for t in expected.values())
    if index["metadata"].get("total_size") != total:
        problems.append(f"total_size {index['metadata'].get('total_size')} != {total}")
    if sorted(loaded) != sorted(expected) or sorted(index["weight_map"]) != sorted(expected):
        problems.append(f"names {sorted(loaded)} != {sorted(expected)}")
    for name, want in expected.items():
        got = loaded.get(name)
        if got is None or got.dtype != want.dtype or not torch.equal(got, want):
            problems.append(f"{name} differs")
    print(f"python: {directory}: {len(files)} shards, {len(loaded)} tensors, total_size {index['metadata'].get('total_size')}: "
          f"{'OK' if not problems else 'MISMATCH'}")
    for p in problems:
        print(f"  {p}")
    return not problems


def main():
    root = pathlib.Path(sys.argv[1])
    print(f"python: torch {torch.__version__}")
    ok = check(root / "cpp" / "dtypes.safetensors", expected_dtypes(), {"writer": "acc"})
    ok &= check(root / "cpp" / "model.safetensors", expected_model(), {"format": "pt"})
    ok &= check_sharded(root / "cpp_sharded", expected_model())
    ok &= check(root / "checkpoint" / "model.safetensors", expected_model(), {"format": "pt"})
    out = root / "python"
    out.mkdir(parents=True, exist_ok=True)
    save_file(expected_dtypes(), str(out / "dtypes.safetensors"), metadata={"writer": "python"})
    save_file(expected_model(), str(out / "model.safetensors"), metadata={"format": "pt"})
    print(f"python: wrote {out / 'dtypes.safetensors'} and {out / 'model.safetensors'}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
