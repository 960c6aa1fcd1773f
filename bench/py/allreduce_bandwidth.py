# All-reduce bus bandwidth through torch.distributed (ProcessGroupNCCL), fp32, 1-256 MiB: the
# baseline for bench/allreduce_bandwidth.cpp. Run with torchrun --nproc_per_node N.
import os

import torch
import torch.distributed as dist

dist.init_process_group("nccl")
rank, world = dist.get_rank(), dist.get_world_size()
torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
warmup, iterations, repeats = 5, 20, 5
for mib in (1, 4, 25, 100, 256):
    buffer = torch.ones(mib * 1024 * 1024 // 4, device="cuda", dtype=torch.float32)
    for _ in range(warmup):
        dist.all_reduce(buffer)
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iterations):
            dist.all_reduce(buffer)
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) * 1000.0 / iterations)
    us = sorted(times)[repeats // 2]  # the median window
    busbw = buffer.numel() * 4 / (us * 1e-6) * 2.0 * (world - 1) / world / 1e9
    if rank == 0:
        print(f"torch_nccl size_mib={mib} time_us={us:.1f} busbw_gbps={busbw:.1f}", flush=True)
dist.destroy_process_group()
