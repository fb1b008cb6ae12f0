"""Benchmark: seconds per image and network evaluations (NFE) of the diffusion classifier (DC), the RDC and the multi-head RDC.

    python benchmarks/rdc.py           # digits-sized (8x8, 'tiny' UNet) on the CPU; with CUDA also 32x32 DDPM++-sized, fp32 and bf16
    python benchmarks/rdc.py --quick   # fewer images

For each model: a prediction (no gradients) and one attack gradient (exact through the DC, BPDA through LM), per image, at
the released demos' grid of 125 noise levels and at the quick report's 8, after a warm-up call. Random weights: speed does
not depend on them. bf16 runs the networks under torch.autocast. Writes reports/benchmarks/rdc.{json,md}.
"""
import contextlib

import torch

from difrob.diffusion import create_denoiser
from difrob.rdc import RDC, DiffusionClassifier, multihead_from_conditional

from common import backbones, timed, write_report


def seconds_per_image(model, x, grad, device, bf16):
    ctx = torch.autocast(device, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    def once(xb):
        with ctx:
            if not grad:
                with torch.no_grad(): model(xb)
            else:
                xb = xb.clone().requires_grad_(True)
                torch.autograd.grad(model(xb).logsumexp(1).sum(), xb)
    once(x[:1])  # warm-up
    return timed(lambda: once(x), device)[0] / len(x)


def main():
    quick, cases = backbones(__doc__, cpu=(16, 1024), gpu=(4, 256))
    rows = []
    for name, spec, dev, bf16, n, chunk in cases:
        D = create_denoiser(*spec).to(dev).eval().requires_grad_(False)
        M = multihead_from_conditional(D).to(dev).requires_grad_(False)
        if quick: n = max(1, n // 4)
        x = torch.rand(n, spec[1], spec[0], spec[0], device=dev)
        for S in (8, 125):
            models = {'DC': DiffusionClassifier(D, n_sigma=S, chunk=chunk),
                      'RDC': RDC(DiffusionClassifier(D, n_sigma=S, chunk=chunk)),
                      'multi-head DC': DiffusionClassifier(M, n_sigma=S, chunk=chunk),
                      'multi-head RDC': RDC(DiffusionClassifier(M, n_sigma=S, chunk=chunk), D_uncond=D)}
            for mname, m in models.items():
                m = m.to(dev)
                fwd = seconds_per_image(m, x, False, dev, bf16)
                bwd = seconds_per_image(m, x, True, dev, bf16)
                rows.append(dict(model=name, device=dev, bf16=bf16, classifier=mname, n_sigma=S, nfe=m.nfe, images=n,
                                 predict_s=round(fwd, 4), gradient_s=round(bwd, 4), network_evals_per_s=round(m.nfe / fwd, 1)))
                print(rows[-1], flush=True)
    table = write_report('rdc', 'Diffusion classifier cost per image', rows,
                         {'model': 'backbone', 'device': 'device', 'bf16': 'bf16', 'classifier': 'classifier', 'n_sigma': 'noise levels',
                          'nfe': 'NFE', 'images': 'images', 'predict_s': 's/image (predict)', 'gradient_s': 's/image (gradient)',
                          'network_evals_per_s': 'network evals/s'})
    print(table)


if __name__ == '__main__':
    main()
