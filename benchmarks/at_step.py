"""Benchmark: throughput of one adversarial-training step (TRADES, 10 PGD steps, EMA update) in images/s.

    python benchmarks/at_step.py            # small CNN on 8x8 digits (CPU); WRN-28-10 at 32x32 too when CUDA is present
    python benchmarks/at_step.py --quick    # fewer batches

Times the real trainer (`difrob.train.train`): two runs of different numbers of batches, so set-up costs
cancel in the difference. Writes reports/benchmarks/at_step.{json,md}.
"""
import argparse, time

import torch

from difrob.data import ImageData
from difrob.models import create_model
from difrob.train import TrainConfig, train

from common import write_report

def seconds_per_batch(arch, shape, batch, device, bf16=False, channels_last=False, n=(5, 25), repeats=3):
    "Median over `repeats` of (time of n[1] batches − time of n[0] batches) / (n[1] − n[0]), after a warm-up run."
    c, h, w = shape
    g = torch.Generator().manual_seed(0)
    data = ImageData(torch.rand(max(batch * 2, 64), c, h, w, generator=g), torch.randint(0, 10, (max(batch * 2, 64),), generator=g),
                     [str(i) for i in range(10)], 'random')
    run = lambda nb: _timed_run(arch, data, c, batch, nb, device, bf16, channels_last)
    run(2)  # warm-up: thread pools, kernels, allocator
    diffs = sorted(run(n[1]) - run(n[0]) for _ in range(repeats))
    return diffs[len(diffs) // 2] / (n[1] - n[0])


def _timed_run(arch, data, c, batch, nb, device, bf16, channels_last):
    "Seconds for one `train` call of `nb` TRADES batches on a fresh model."
    model = create_model(arch, in_channels=c)
    cfg = TrainConfig(loss='trades', eps=8 / 255, attack_steps=10, epochs=1, batch_size=batch, n_batches=nb, n_val=0,
                      gen_fraction=0.0, padding=0, flip=False, bf16=bf16, channels_last=channels_last, device=device,
                      checkpoint_every=1000)
    if device.startswith('cuda'): torch.cuda.synchronize()
    t = time.perf_counter()
    train(model, data, cfg, progress=False)
    if device.startswith('cuda'): torch.cuda.synchronize()
    return time.perf_counter() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true')
    a = ap.parse_args()
    torch.manual_seed(0)
    rows = []
    cases = [('cnn', (1, 8, 8), 128, 'cpu', False, False)]
    if torch.cuda.is_available():
        cases += [('wrn-28-10', (3, 32, 32), 512, 'cuda', bf16, cl) for bf16 in (False, True) for cl in (False, True)]
    for arch, shape, batch, dev, bf16, cl in cases:
        s = seconds_per_batch(arch, shape, batch, dev, bf16, cl, (2, 6) if a.quick else (5, 25), 1 if a.quick else 3)
        rows.append(dict(arch=arch, input='x'.join(map(str, shape)), batch=batch, device=dev, bf16=bf16, channels_last=cl,
                         seconds_per_step=round(s, 4), images_per_s=round(batch / s, 1)))
        print(rows[-1], flush=True)
    table = write_report('at_step', 'AT step throughput (TRADES, 10 PGD steps)', rows,
                         {'arch': 'arch', 'input': 'input', 'batch': 'batch', 'device': 'device', 'bf16': 'bf16',
                          'channels_last': 'channels_last', 'seconds_per_step': 's/step', 'images_per_s': 'images/s'})
    print(table)


if __name__ == '__main__':
    main()
