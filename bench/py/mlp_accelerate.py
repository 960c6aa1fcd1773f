# The tiny MLP of bench/step_overhead.cpp (512-512-10, batch 64, AdamW) trained with Python
# Accelerate: ms/step, the median of rounds, for the acc / Python ratio in
# bench/gpu_precision.sh. Run with `accelerate launch --mixed_precision P`; AdamW is
# PyTorch's default (foreach on CUDA), or with --fused its one-kernel variant.
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
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=FUSED or None)
model, optimizer = accelerator.prepare(model, optimizer)
batches = [(torch.randn(64, 512, device=accelerator.device), torch.randint(0, 10, (64,), device=accelerator.device))
           for _ in range(16)]


def timed_round():
    torch.cuda.synchronize()
    start = time.perf_counter()
    for i in range(STEPS):
        x, y = batches[i % len(batches)]
        optimizer.zero_grad()
        accelerator.backward(F.cross_entropy(model(x), y))
        optimizer.step()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) * 1000 / STEPS


timed_round()
times = sorted(timed_round() for _ in range(ROUNDS))
print(f"python mlp precision={accelerator.mixed_precision} fused={int(FUSED)} ms_per_step={times[len(times) // 2]:.4f}", flush=True)
