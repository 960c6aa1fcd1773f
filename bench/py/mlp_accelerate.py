# The tiny MLP of bench/step_overhead.cpp and bench/captured_step.cpp (512-512-10, batch 64, AdamW)
# trained with Python Accelerate: ms/step, the median of rounds, for the acc / Python ratios in
# bench/gpu_precision.sh and bench/gpu_captured_step.sh. Run with `accelerate launch
# --mixed_precision P`; AdamW is PyTorch's default (foreach on CUDA), or with --fused its one-kernel
# variant. --graph records the whole step (forward, backward, AdamW with capturable=True) as one CUDA
# graph with torch.cuda.graph and replays it, as PyTorch's documentation shows for whole-network
# capture: the fastest Python loop here. Not with fp16, where Accelerate's optimizer step reads the
# loss scale on the host.
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate import Accelerator

ROUNDS, STEPS = 15, 100

accelerator = Accelerator()
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(), nn.Linear(512, 10))
FUSED = "--fused" in sys.argv[1:]
GRAPH = "--graph" in sys.argv[1:]
if GRAPH and accelerator.mixed_precision == "fp16":
    sys.exit("mlp_accelerate.py: --graph is not possible with fp16 (Accelerate's step reads the scale on the host)")
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=(FUSED or GRAPH) or None, capturable=GRAPH)
model, optimizer = accelerator.prepare(model, optimizer)
batches = [(torch.randn(64, 512, device=accelerator.device), torch.randint(0, 10, (64,), device=accelerator.device))
           for _ in range(16)]


def step(x, y):
    optimizer.zero_grad()
    loss = F.cross_entropy(model(x), y)
    accelerator.backward(loss)
    optimizer.step()
    return loss


if GRAPH:
    static_x, static_y = (t.clone() for t in batches[0])
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up on a side stream, as the documentation asks
        for _ in range(3):
            step(static_x, static_y)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    optimizer.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        static_loss = step(static_x, static_y)

    def train(x, y):
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        return static_loss
else:
    train = step


def timed_round():
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(STEPS):
        train(*batches[i % len(batches)])
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000 / STEPS


timed_round()
times = sorted(timed_round() for _ in range(ROUNDS))
print(f"python mlp precision={accelerator.mixed_precision} fused={int(FUSED)} graph={int(GRAPH)} "
      f"ms_per_step={times[len(times) // 2]:.4f}", flush=True)
