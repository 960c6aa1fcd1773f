# The GPT-2-small-sized model of bench/common/gpt.hpp in Python, trained with Hugging Face
# Accelerate (bf16, F.scaled_dot_product_attention, fused AdamW) on random tokens: the baseline
# for bench/gpt_ddp.cpp. Run with `accelerate launch [--multi_gpu --num_processes N]
# --mixed_precision bf16 bench/py/gpt_accelerate.py`.
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate import Accelerator

LAYERS, DIM, HEADS, VOCAB, SEQ = 12, 768, 12, 32768, 512  # --layers --dim --heads --vocab --seq


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.qkv, self.proj = nn.LayerNorm(DIM), nn.Linear(DIM, 3 * DIM), nn.Linear(DIM, DIM)
        self.ln2, self.fc, self.out = nn.LayerNorm(DIM), nn.Linear(DIM, 4 * DIM), nn.Linear(4 * DIM, DIM)

    def forward(self, x):
        b, t, d = x.shape
        # q, k, v as slices of the projection viewed as heads: 22.4 ms a step, against 24.5 ms with
        # one permute of a (b, t, 3, h, d/h) view (one H200, 2026-11-30): the fastest formulation found.
        q, k, v = (part.view(b, t, HEADS, d // HEADS).transpose(1, 2) for part in self.qkv(self.ln1(x)).split(d, 2))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(y)
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class Gpt(nn.Module):
    def __init__(self):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(VOCAB, DIM), nn.Embedding(SEQ, DIM)
        self.blocks = nn.ModuleList(Block() for _ in range(LAYERS))
        self.ln, self.head = nn.LayerNorm(DIM), nn.Linear(DIM, VOCAB, bias=False)

    def forward(self, ids):
        x = self.tokens(ids) + self.positions(torch.arange(ids.shape[1], device=ids.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln(x))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=1)  # ms/step: the median of the windows
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--seq", type=int, default=512)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--heads", type=int, default=12)
    args = parser.parse_args()
    global LAYERS, SEQ, VOCAB, DIM, HEADS
    LAYERS, SEQ, VOCAB, DIM, HEADS = args.layers, args.seq, args.vocab, args.dim, args.heads
    accelerator = Accelerator()
    torch.manual_seed(0)
    model = Gpt()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.01, fused=True)
    model, optimizer = accelerator.prepare(model, optimizer)
    # A pool of batches, cycled: sequence i is start_i + t stride_i (mod vocab), as gpt_ddp.cpp.
    batches, window = 32, 10
    device = accelerator.device
    starts = torch.randint(0, VOCAB, (batches, args.batch, 1), device=device)
    strides = torch.randint(1, 64, (batches, args.batch, 1), device=device)
    pool = (starts + strides * torch.arange(SEQ + 1, device=device)).remainder(VOCAB)
    total = args.warmup + args.steps * args.repeats
    state = {"next": 0, "taken": 0, "recent": torch.zeros((), device=device)}

    def step():
        ids = pool[state["next"] % batches]
        state["next"] += 1
        optimizer.zero_grad()
        logits = model(ids[:, :SEQ])
        loss = F.cross_entropy(logits.view(-1, VOCAB), ids[:, 1:].reshape(-1))
        state["taken"] += 1
        if state["taken"] > total - window:
            state["recent"] += loss.detach() / window
        accelerator.backward(loss)
        optimizer.step()

    for _ in range(args.warmup):
        step()
    accelerator.wait_for_everyone()
    windows = []
    for _ in range(args.repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(args.steps):
            step()
        stop.record()
        stop.synchronize()
        windows.append(start.elapsed_time(stop) / args.steps)
    ms = sorted(windows)[len(windows) // 2]
    final_loss = state["recent"].item()
    inputs, targets = pool[0][:, :SEQ], pool[0][:, 1:]
    events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
    modelled = torch.cuda.Event(enable_timing=True)
    phase, host_forward, model_only = [0.0, 0.0, 0.0], 0.0, 0.0
    for _ in range(10):
        events[0].record()
        host_start = time.perf_counter()
        optimizer.zero_grad()
        logits = model(inputs)
        modelled.record()
        loss = F.cross_entropy(logits.view(-1, VOCAB), targets.reshape(-1))
        host_forward += (time.perf_counter() - host_start) * 100
        events[1].record()
        accelerator.backward(loss)
        events[2].record()
        optimizer.step()
        events[3].record()
        events[3].synchronize()
        for i in range(3):
            phase[i] += events[i].elapsed_time(events[i + 1]) / 10
        model_only += events[0].elapsed_time(modelled) / 10
    accelerator.print(
        f"python gpt breakdown ms: forward {phase[0]:.3f} (model {model_only:.3f} logits {logits.dtype}) backward {phase[1]:.3f} optimizer {phase[2]:.3f} "
        f"host time to issue the forward {host_forward:.3f}"
    )
    world = accelerator.num_processes
    peak = torch.cuda.max_memory_allocated() / 2**30
    accelerator.print(
        f"python gpt ranks={world} precision={accelerator.mixed_precision} layers={LAYERS} dim={DIM} ms_per_step={ms:.3f} final_loss={final_loss:.4f} tokens_per_s={world * args.batch * SEQ / (ms / 1000):.0f} "
        f"peak_gib={peak:.2f} strategy={accelerator.distributed_type.name}"
    )


if __name__ == "__main__":
    main()
