"""Benchmark: EDM sampling throughput (images/s) and network evaluations (NFE) per sampler.

    python benchmarks/sampling.py           # the digits model (8x8, 'tiny' UNet) on the CPU; a DDPM++-sized 32x32 UNet too with CUDA
    python benchmarks/sampling.py --quick   # smaller batches

Times `difrob.generate.generate_images`, the code path of `difrob-generate` (per-image seeds, fixed network micro-batches,
EDM's uint8 conversion), after one warm-up batch. Random weights: speed does not depend on them.
Writes reports/benchmarks/sampling.{json,md}.
"""
import argparse, platform, time
from pathlib import Path

import torch

from difrob.core import package_versions, save_json
from difrob.diffusion import FixedBatch, create_denoiser
from difrob.generate import generate_images

ROOT = Path(__file__).resolve().parents[1]
STEPS = {'heun': 18, 'euler': 18, 'dpm': 18}


def images_per_second(D, n, batch, net_batch, sampler, device, bf16):
    net = FixedBatch(D, net_batch)
    shape = (D.channels, D.resolution, D.resolution)
    kw = dict(batch_size=batch, bf16=bf16, device=device, sampler=sampler, steps=STEPS[sampler])
    generate_images(net, 0, range(min(batch, n)), shape, **kw)  # warm-up
    if device == 'cuda': torch.cuda.synchronize()
    t = time.perf_counter()
    _, info = generate_images(net, 0, range(n), shape, **kw)
    if device == 'cuda': torch.cuda.synchronize()
    return n / (time.perf_counter() - t), info['nfe']


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--quick', action='store_true')
    a = ap.parse_args()
    torch.manual_seed(0)
    cases = [('digits tiny', (8, 1, 10, 'tiny'), 'cpu', False, 256, 64)]
    if torch.cuda.is_available():
        cases += [('cifar ddpmpp', (32, 3, 10, 'ddpmpp'), 'cuda', bf16, 512, 512) for bf16 in (False, True)]
    rows = []
    for name, spec, dev, bf16, n, net_batch in cases:
        D = create_denoiser(*spec).to(dev).eval()
        params = sum(p.numel() for p in D.parameters())
        if a.quick: n = n // 4
        for sampler in STEPS:
            ips, nfe = images_per_second(D, n, n, min(net_batch, n), sampler, dev, bf16)
            rows.append(dict(model=name, params_M=round(params / 1e6, 2), device=dev, bf16=bf16, sampler=sampler, steps=STEPS[sampler],
                             nfe=nfe, batch=n, images_per_s=round(ips, 1), network_evals_per_s=round(ips * nfe, 1)))
            print(rows[-1], flush=True)
    info = {'cpu': platform.processor() or platform.machine(), 'threads': torch.get_num_threads(),
            'gpu': torch.cuda.get_device_name() if torch.cuda.is_available() else None, 'versions': package_versions()}
    out = ROOT/'reports'/'benchmarks'
    save_json(out/'sampling.json', {'rows': rows, 'machine': info})
    head = '| model | params (M) | device | bf16 | sampler | steps | NFE | batch | images/s | network evals/s |\n|' + '---|' * 10 + '\n'
    table = head + ''.join(f"| {r['model']} | {r['params_M']} | {r['device']} | {r['bf16']} | {r['sampler']} | {r['steps']} | {r['nfe']} | "
                           f"{r['batch']} | {r['images_per_s']} | {r['network_evals_per_s']} |\n" for r in rows)
    (out/'sampling.md').write_text(f"# EDM sampling throughput\n\nMachine: {info['cpu']}, {info['threads']} threads, "
                                   f"GPU: {info['gpu']}\n\n{table}")
    print(table)


if __name__ == '__main__':
    main()
