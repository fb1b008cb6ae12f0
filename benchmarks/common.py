"""What every benchmark script writes: a JSON record with the machine, and a markdown table, under reports/benchmarks/."""
import argparse, platform, time
from pathlib import Path

import torch

from difrob.core import package_versions, save_json

ROOT = Path(__file__).resolve().parents[1]


def write_report(name: str, title: str, rows: list, columns: dict) -> str:
    """Save `rows` (dicts) to reports/benchmarks/NAME.json and a table of `columns` (key -> header) to NAME.md; return the table."""
    info = {'cpu': platform.processor() or platform.machine(), 'threads': torch.get_num_threads(),
            'gpu': torch.cuda.get_device_name() if torch.cuda.is_available() else None, 'versions': package_versions()}
    out = ROOT/'reports'/'benchmarks'
    save_json(out/f'{name}.json', {'rows': rows, 'machine': info})
    table = ('| ' + ' | '.join(columns.values()) + ' |\n|' + '---|' * len(columns) + '\n'
             + ''.join('| ' + ' | '.join(str(r[k]) for k in columns) + ' |\n' for r in rows))
    (out/f'{name}.md').write_text(f"# {title}\n\nMachine: {info['cpu']}, {info['threads']} threads, GPU: {info['gpu']}\n\n{table}")
    return table


def backbones(doc: str, cpu: tuple, gpu: tuple) -> tuple:
    """Parse --quick; return (quick, cases): the digits 'tiny' UNet on the CPU with `cpu` = (n, batch), and with CUDA a
    DDPM++-sized 32x32 UNet in fp32 and bf16 with `gpu` = (n, batch). A case is (name, create_denoiser args, device, bf16, n, batch)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument('--quick', action='store_true')
    quick = ap.parse_args().quick
    torch.manual_seed(0)
    cases = [('digits tiny', (8, 1, 10, 'tiny'), 'cpu', False, *cpu)]
    if torch.cuda.is_available():
        cases += [('cifar ddpmpp', (32, 3, 10, 'ddpmpp'), 'cuda', bf16, *gpu) for bf16 in (False, True)]
    return quick, cases


def timed(fn, device: str):
    """(seconds, result) of one call of `fn`, synchronising CUDA before and after."""
    if device == 'cuda': torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if device == 'cuda': torch.cuda.synchronize()
    return time.perf_counter() - t, out
