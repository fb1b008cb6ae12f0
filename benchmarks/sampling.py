"""Benchmark: EDM sampling throughput (images/s) and network evaluations (NFE) per sampler.

    python benchmarks/sampling.py           # the digits model (8x8, 'tiny' UNet) on the CPU; a DDPM++-sized 32x32 UNet too with CUDA
    python benchmarks/sampling.py --quick   # smaller batches

Times `difrob.generate.generate_images`, the code path of `difrob-generate` (per-image seeds, fixed network micro-batches,
EDM's uint8 conversion), after one warm-up batch. Random weights: speed does not depend on them.
Writes reports/benchmarks/sampling.{json,md}.
"""

import torch

from difrob.diffusion import FixedBatch, create_denoiser
from difrob.generate import generate_images

from common import backbones, timed, write_report

STEPS = {'heun': 18, 'euler': 18, 'dpm': 18}


def images_per_second(D, n, batch, net_batch, sampler, device, bf16):
    net = FixedBatch(D, net_batch)
    shape = (D.channels, D.resolution, D.resolution)
    kw = dict(batch_size=batch, bf16=bf16, device=device, sampler=sampler, steps=STEPS[sampler])
    generate_images(net, 0, range(min(batch, n)), shape, **kw)  # warm-up
    secs, (_, info) = timed(lambda: generate_images(net, 0, range(n), shape, **kw), device)
    return n / secs, info['nfe']


def main():
    quick, cases = backbones(__doc__, cpu=(256, 64), gpu=(512, 512))
    rows = []
    for name, spec, dev, bf16, n, net_batch in cases:
        D = create_denoiser(*spec).to(dev).eval()
        params = sum(p.numel() for p in D.parameters())
        if quick: n = n // 4
        for sampler in STEPS:
            ips, nfe = images_per_second(D, n, n, min(net_batch, n), sampler, dev, bf16)
            rows.append(dict(model=name, params_M=round(params / 1e6, 2), device=dev, bf16=bf16, sampler=sampler, steps=STEPS[sampler],
                             nfe=nfe, batch=n, images_per_s=round(ips, 1), network_evals_per_s=round(ips * nfe, 1)))
            print(rows[-1], flush=True)
    table = write_report('sampling', 'EDM sampling throughput', rows,
                         {'model': 'model', 'params_M': 'params (M)', 'device': 'device', 'bf16': 'bf16', 'sampler': 'sampler',
                          'steps': 'steps', 'nfe': 'NFE', 'batch': 'batch', 'images_per_s': 'images/s',
                          'network_evals_per_s': 'network evals/s'})
    print(table)


if __name__ == '__main__':
    main()
