# Records torch.amp.GradScaler's behaviour on a small deterministic problem, for the C++ test
# "GradScaler matches torch.amp.GradScaler's golden values" (tests/test_precision.cpp).
# Run where Python has torch (the GPU machines): python3 tests/golden/grad_scaler.py OUT.txt
#
# A linear model 4 -> 1, SGD with momentum, fp32 on the CPU with loss scaling (init 2^16,
# growth interval 3). Every value is exact in binary; steps 3, 4 and 10 feed an input of 1e30,
# whose square overflows, so those steps must be skipped and the scale backs off, and it grows
# again after three clean steps. The file holds the scale after each update, whether the step
# was skipped, and the parameters at the end, as hex floats (exact).
import sys

import torch

STEPS, OVERFLOW_STEPS = 16, (3, 4, 10)


def batch(step):
    x = torch.tensor([[((i * 7 + j * 3 + step * 5) % 11 - 5) / 8.0 for j in range(4)] for i in range(8)])
    y = torch.tensor([[((i + step) % 5 - 2) / 4.0] for i in range(8)])
    if step in OVERFLOW_STEPS:
        x[0, 0] = 1e30
    return x, y


model = torch.nn.Linear(4, 1)
with torch.no_grad():
    model.weight.copy_(torch.tensor([[0.125, -0.25, 0.375, -0.5]]))
    model.bias.fill_(0.0625)
optimizer = torch.optim.SGD(model.parameters(), lr=0.0625, momentum=0.875)
scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16, growth_factor=2.0, backoff_factor=0.5, growth_interval=3)

lines = [f"# torch {torch.__version__}: scale <step> <scale after update> <skipped>; param <name> <values>"]
for step in range(STEPS):
    x, y = batch(step)
    optimizer.zero_grad()
    loss = ((model(x) - y) ** 2).mean()
    scaler.scale(loss).backward()
    before = [p.detach().clone() for p in model.parameters()]
    scaler.step(optimizer)
    scaler.update()
    skipped = all(torch.equal(b, p) for b, p in zip(before, model.parameters()))
    lines.append(f"scale {step} {float(scaler.get_scale()).hex()} {int(skipped)}")
for name, p in model.named_parameters():
    lines.append(f"param {name} " + " ".join(float(v).hex() for v in p.detach().flatten().tolist()))
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
