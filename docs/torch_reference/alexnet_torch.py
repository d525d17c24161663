"""PyTorch reference for `alexnet-benchmark`: the same two-tower AlexNet, one fp32 train step.

Not part of alexnet_tf (torch is no dependency of the package): run it in its
own virtualenv, on the same machine and in the same session as the benchmark,
so the two numbers compare (docs/BENCHMARKS.md):

    python3 -m venv /tmp/torch-venv && /tmp/torch-venv/bin/pip install torch numpy
    /tmp/torch-venv/bin/python docs/torch_reference/alexnet_torch.py --batch_size=64 \
        --json=/tmp/torch.json

The net is ours layer for layer: conv1 11x11/4 (padding 2 on 224x224), two
towers of 48/128/192/192/128 kernels with LRN (n=5, k=2, alpha=1e-4 per the
paper, i.e. 5e-4 in PyTorch's alpha/n convention, within each tower) and 3/2
max pooling; conv3 and the fully connected layers see both towers. A grouped
convolution (groups=2) is exactly two towers' convolutions side by side, and a
convolution or dense layer that sees both towers is exactly one full layer. The
update is SGD with momentum 0.9 and weight decay 0.0005 added to the gradient
(coupled, as the paper), on weights only.
"""

import argparse
import json
import platform
import statistics
import time

import torch
from torch import nn


class TowerLRN(nn.Module):
    """The paper's LRN within each tower (PyTorch divides alpha by n: pass alpha * n)."""

    def __init__(self, towers=2):
        super().__init__()
        self.towers = towers
        self.lrn = nn.LocalResponseNorm(size=5, alpha=1e-4 * 5, beta=0.75, k=2.0)

    def forward(self, x):
        return torch.cat([self.lrn(t) for t in x.chunk(self.towers, dim=1)], dim=1)


def alexnet(num_classes):
    return nn.Sequential(
        nn.Conv2d(3, 96, 11, stride=4, padding=2), nn.ReLU(), TowerLRN(), nn.MaxPool2d(3, 2),
        nn.Conv2d(96, 256, 5, padding=2, groups=2), nn.ReLU(), TowerLRN(), nn.MaxPool2d(3, 2),
        nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(),
        nn.Conv2d(384, 384, 3, padding=1, groups=2), nn.ReLU(),
        nn.Conv2d(384, 256, 3, padding=1, groups=2), nn.ReLU(), nn.MaxPool2d(3, 2),
        nn.Flatten(),
        nn.Linear(9216, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(4096, num_classes))


def train_rate(batch_size, num_classes, channels_last, steps, repeats):
    torch.manual_seed(0)
    model = alexnet(num_classes)
    images = torch.randn(batch_size, 3, 224, 224)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        images = images.contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, num_classes, (batch_size,))
    weights = [p for p in model.parameters() if p.dim() >= 2]
    biases = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.SGD([{"params": weights, "weight_decay": 5e-4},
                                 {"params": biases, "weight_decay": 0.0}], lr=1e-4, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(images), labels)
        loss.backward()
        optimizer.step()
        return loss.item()

    step()                                            # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * batch_size / (time.perf_counter() - start))
    return statistics.median(rates), sum(p.numel() for p in model.parameters())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--num_classes", type=int, default=10)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    results = {"torch_version": torch.__version__, "threads": torch.get_num_threads(),
               "batch_size": args.batch_size, "processor": platform.processor()}
    for name, channels_last in (("train_fp32_img_s", False),
                                ("train_fp32_channels_last_img_s", True)):
        rate, params = train_rate(args.batch_size, args.num_classes, channels_last,
                                  args.steps, args.repeats)
        results[name], results["parameters"] = rate, params
    for key, value in results.items():
        print(f"{key:<34} {value:>14.2f}" if isinstance(value, float) else
              f"{key:<34} {str(value):>14}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
