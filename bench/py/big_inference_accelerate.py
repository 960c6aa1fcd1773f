# The Python half of bench/big_inference.sh: the GPT of examples/big_model_inference/gpt.hpp in
# plain torch (F.scaled_dot_product_attention, a KV cache), built under accelerate's
# init_empty_weights and loaded with accelerate.load_checkpoint_and_dispatch from the checkpoint
# `big_inference save DIR` wrote, with the device map in DIR/config.json; then greedy decoding.
# Prints one line as `big_inference run` does:
#   python3 bench/py/big_inference_accelerate.py DIR [--new_tokens 64]
import argparse
import json
import os
import resource
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from accelerate import init_empty_weights, load_checkpoint_and_dispatch
from safetensors.torch import load_file

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def seconds_since_process_start():
    """As the kernel counts them (10 ms ticks), the imports included, as `big_inference run` counts."""
    with open("/proc/self/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()  # from field 3, the state, on
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return uptime - int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: starttime


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.heads = c["heads"]
        dim = c["dim"]
        self.ln1, self.qkv, self.proj = nn.LayerNorm(dim), nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.ln2, self.fc, self.out = nn.LayerNorm(dim), nn.Linear(dim, 4 * dim), nn.Linear(4 * dim, dim)

    def forward(self, x, cache=None):
        """x's tokens after the cached ones (cache: this block's keys and values, or None for the
        prompt); returns the block's output and the keys and values so far."""
        b, t, d = x.shape
        q, k, v = (part.view(b, t, self.heads, d // self.heads).transpose(1, 2) for part in self.qkv(self.ln1(x)).split(d, 2))
        if cache is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:  # one new token sees every cached one
            k, v = torch.cat((cache[0], k), 2), torch.cat((cache[1], v), 2)
            y = F.scaled_dot_product_attention(q, k, v)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, d))
        return x + self.out(F.gelu(self.fc(self.ln2(x)))), (k, v)


class Gpt(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.tokens, self.positions = nn.Embedding(c["vocab"], c["dim"]), nn.Embedding(c["context"], c["dim"])
        self.blocks = nn.ModuleList(Block(c) for _ in range(c["layers"]))
        self.ln, self.head = nn.LayerNorm(c["dim"]), nn.Linear(c["dim"], c["vocab"], bias=False)

    def forward(self, ids, cache=None):
        # A dict, so that accelerate's skip_keys leaves the cache where each block made it (on the
        # block's device) rather than moving it to the input's device and back at every token.
        start = 0 if cache is None else cache[0][0].shape[2]
        x = self.tokens(ids) + self.positions(torch.arange(start, start + ids.shape[1], device=ids.device))
        new_cache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, cache=None if cache is None else cache[i])
            new_cache.append(kv)
        return {"logits": self.head(self.ln(x)), "cache": new_cache}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--new_tokens", type=int, default=64)
    args = parser.parse_args()
    with open(os.path.join(args.dir, "config.json")) as f:
        config = json.load(f)

    with init_empty_weights():
        model = Gpt(config)
    index = os.path.join(args.dir, "model.safetensors.index.json")
    load_start = time.perf_counter()
    model = load_checkpoint_and_dispatch(
        model,
        checkpoint=index if os.path.exists(index) else args.dir,
        device_map=config["device_map"],
        no_split_module_classes=["Block"],
        offload_folder=os.path.join(args.dir, "py_offload"),
        dtype=DTYPES[config["dtype"]],
        skip_keys="cache",
    )
    load_s = time.perf_counter() - load_start
    # Accelerate's main device: the map's first GPU, else the CPU.
    gpus = [d for d in config["device_map"].values() if isinstance(d, int)]
    device = torch.device("cuda", gpus[0]) if gpus else torch.device("cpu")

    with torch.inference_mode():
        ids = load_file(os.path.join(args.dir, "prompt.safetensors"))["ids"].to(device)
        out = model(ids)
        next_token = out["logits"][:, -1].argmax(-1, keepdim=True)
        generated = [next_token]
        next_token.cpu()  # waits for the GPU: the first token is there
        first_token = time.perf_counter()
        ttft_s = seconds_since_process_start()
        cache = out["cache"]
        for _ in range(args.new_tokens - 1):
            out = model(next_token, cache=cache)
            cache = out["cache"]
            next_token = out["logits"][:, -1].argmax(-1, keepdim=True)
            generated.append(next_token)
        tokens = torch.cat(generated, 1).cpu()
        decode_s = time.perf_counter() - first_token

    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(f"python big_inference ttft_s={ttft_s:.3f} load_s={load_s:.3f} "
          f"tokens_per_s={(args.new_tokens - 1) / decode_s:.2f} peak_host_bytes={peak} model_bytes={model_bytes} "
          f"new_tokens={args.new_tokens} tokens={','.join(str(t) for t in tokens[0].tolist())}")


if __name__ == "__main__":
    main()
