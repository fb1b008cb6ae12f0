"""What every benchmark script writes: a JSON record with the machine, and a markdown table, under reports/benchmarks/."""
import platform
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
