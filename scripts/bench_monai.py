#!/usr/bin/env python3
"""MONAI's training step, timed the way `medseg bench train` times medseg's, for side-by-side numbers.

The same network (MONAI's default BraTS UNet: 4 -> 3 channels, (16, 32, 64, 128, 256), strides 2,
2 residual units), the same loss (sigmoid Dice, squared denominators, smooth 1e-5), Adam (lr 1e-4,
weight decay 1e-5), random 4-channel input and 0/1 targets of the roi size, bf16 autocast or fp32.
Each configuration: warm-up steps, then timed steps; the median step time gives samples/s, and
the CUDA allocator's peak gives the memory (process RSS on the CPU).

usage: bench_monai.py [--device cuda] [--roi 128 128 64] [--batch 2 4 8] [--amp bf16 off]
                      [--compile] [--steps 20] [--warmup 5]
Prints one `name=value` line per result, e.g. monai_eager_bf16_b2_samples_per_second=12.3.
"""
import argparse
import resource
import statistics
import time

import torch
from monai.losses import DiceLoss
from monai.networks.nets import UNet


def bench(device, roi, batch, amp, compiled, steps, warmup):
    torch.manual_seed(0)
    net = UNet(spatial_dims=3, in_channels=4, out_channels=3, channels=(16, 32, 64, 128, 256),
               strides=(2, 2, 2, 2), num_res_units=2).to(device)
    model = torch.compile(net) if compiled else net
    loss_function = DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=1e-5, smooth_dr=1e-5)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4, weight_decay=1e-5)
    image = torch.randn(batch, 4, *roi, device=device)
    label = (torch.rand(batch, 3, *roi, device=device) > 0.7).float()
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type="cuda" if cuda else "cpu", dtype=torch.bfloat16,
                            enabled=amp == "bf16"):
            logits = model(image)
        loss_function(logits.float(), label).backward()
        optimizer.step()
        if cuda:
            torch.cuda.synchronize()

    for _ in range(warmup):
        step()
    seconds = []
    for _ in range(steps):
        start = time.perf_counter()
        step()
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    peak = (torch.cuda.max_memory_allocated() / 2**20 if cuda
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return batch / median, peak


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--roi", type=int, nargs=3, default=[128, 128, 64])
    parser.add_argument("--batch", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--amp", nargs="*", default=["bf16", "off"], choices=["bf16", "off"],
                        help="eager modes to time (none: only --compile)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile (bf16)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=5)
    args = parser.parse_args()
    import monai
    print(f"monai_version={monai.__version__}\ntorch_version={torch.__version__}\ndevice={args.device}")
    modes = [("eager", amp) for amp in args.amp] + ([("compile", "bf16")] if args.compile else [])
    for batch in args.batch:
        for mode, amp in modes:
            name = f"monai_{mode}_{amp}_b{batch}"
            try:
                samples, peak = bench(args.device, args.roi, batch, amp, mode == "compile",
                                      args.steps, args.warmup if mode == "eager" else args.warmup + 3)
                print(f"{name}_samples_per_second={samples:.2f}\n{name}_peak_memory_mib={peak:.0f}",
                      flush=True)
            except Exception as error:  # e.g. out of memory: report it and go on
                print(f"{name}_error={type(error).__name__}: {str(error)[:200]}", flush=True)
            if args.device.startswith("cuda"):
                torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
