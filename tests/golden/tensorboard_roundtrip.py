"""Reads the TensorBoard events that acc's char_lm wrote (with --log_with all) and checks them
against the same run's metrics.jsonl: every loss at its step, the final text summary, the header.
Uses tensorboard's own readers where tensorboard is installed; else parses the TFRecords here
(checking their CRC-32C) with messages protoc generates from src/tensorboard/event.proto (needs the
protobuf package and PROTOC); else says what is missing and exits 2.

    python3 tests/golden/tensorboard_roundtrip.py RUN_DIR
"""
import glob
import json
import math
import os
import struct
import subprocess
import sys
import tempfile


def expected(run_dir):
    scalars, texts = {}, {}
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            record = json.loads(line)
            for key, value in record.items():
                if key.startswith("_"):
                    continue
                if isinstance(value, str):
                    texts[(key + "/text_summary", record["_step"])] = value
                else:
                    scalars[(key, record["_step"])] = float(value)
    return scalars, texts


def with_tensorboard(run_dir):
    from tensorboard.backend.event_processing import event_accumulator, event_file_loader

    (path,) = glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))
    first = next(iter(event_file_loader.EventFileLoader(path).Load()))
    assert first.file_version == "brain.Event:2", first
    accumulator = event_accumulator.EventAccumulator(run_dir, size_guidance={"scalars": 0, "tensors": 0})
    accumulator.Reload()
    scalars = {(tag, e.step): e.value for tag in accumulator.Tags()["scalars"] for e in accumulator.Scalars(tag)}
    texts = {}
    for tag in accumulator.Tags()["tensors"]:
        for e in accumulator.Tensors(tag):
            texts[(tag, e.step)] = e.tensor_proto.string_val[0].decode()
    return scalars, texts


def crc32c(data):
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def masked(data):
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def with_protobuf(run_dir):
    protoc = os.environ.get("PROTOC", "protoc")
    out = tempfile.mkdtemp()
    source = os.path.join(os.path.dirname(__file__), "..", "..", "src", "tensorboard")
    subprocess.run([protoc, "--python_out=" + out, "-I", source, os.path.join(source, "event.proto")], check=True)
    sys.path.insert(0, out)
    import event_pb2

    (path,) = glob.glob(os.path.join(run_dir, "events.out.tfevents.*"))
    data = open(path, "rb").read()
    events, offset = [], 0
    while offset < len(data):
        header = data[offset:offset + 8]
        (length,) = struct.unpack("<Q", header)
        assert struct.unpack("<I", data[offset + 8:offset + 12])[0] == masked(header), f"length CRC at {offset}"
        body = data[offset + 12:offset + 12 + length]
        assert struct.unpack("<I", data[offset + 12 + length:offset + 16 + length])[0] == masked(body), f"CRC at {offset}"
        event = event_pb2.Event()
        event.ParseFromString(body)
        events.append(event)
        offset += 16 + length
    assert events[0].file_version == "brain.Event:2", events[0]
    scalars, texts = {}, {}
    for event in events[1:]:
        for value in event.summary.value:
            if value.HasField("tensor"):
                texts[(value.tag, event.step)] = value.tensor.string_val[0].decode()
            else:
                scalars[(value.tag, event.step)] = value.simple_value
    return scalars, texts


def main():
    run_dir = sys.argv[1]
    want_scalars, want_texts = expected(run_dir)
    try:
        import tensorboard

        print(f"reading with tensorboard {tensorboard.__version__}")
        got_scalars, got_texts = with_tensorboard(run_dir)
    except ImportError:
        try:
            import google.protobuf
        except ImportError:
            print("neither tensorboard nor protobuf is installed for this python3: pip install tensorboard")
            return 2
        print(f"tensorboard is not installed: parsing with protobuf {google.protobuf.__version__} and event.proto")
        got_scalars, got_texts = with_protobuf(run_dir)
    problems = []
    if set(got_scalars) != set(want_scalars):
        problems.append(f"scalar (tag, step) pairs differ: {sorted(set(got_scalars) ^ set(want_scalars))[:10]}")
    for key, value in want_scalars.items():
        got = got_scalars.get(key)
        # TensorBoard keeps scalars as float32.
        if got is not None and not math.isclose(got, struct.unpack("f", struct.pack("f", value))[0], rel_tol=1e-7):
            problems.append(f"{key}: events {got}, jsonl {value}")
    if got_texts != want_texts:
        problems.append(f"texts differ: events {got_texts}, jsonl {want_texts}")
    steps = sorted(step for tag, step in got_scalars if tag == "loss")
    print(f"{len(got_scalars)} scalars ({len(steps)} losses, steps {steps[:1]}..{steps[-1:]}), {len(got_texts)} texts")
    for problem in problems:
        print("MISMATCH", problem)
    print("tensorboard round trip OK" if not problems else f"{len(problems)} mismatches")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
