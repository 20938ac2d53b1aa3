"""Where a .tflite file's bytes go: constant data by type (int8 weights, int32 biases, float32 ...), the
quantisation parameters (a float32 scale and an int64 zero point per channel or per tensor; the schema
fixes those types), tensor names, and the rest (the graph: ops, tensor records, flatbuffer tables).

    .venv/bin/python benchmarks/tflite_size.py MODEL.tflite [MODEL.tflite ...] [--json OUT.json]

BENCHMARKS.md ("Seed contract and warm start") uses it for the int8 file-size breakdown.
"""

import argparse
import collections
import json
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.tools import flatbuffer_utils

TYPE_NAMES = {
    code: name for name, code in schema.TensorType.__dict__.items() if not name.startswith("_")
}


def breakdown(path: Path) -> dict:
    """Byte counts of one .tflite by what they hold."""
    model = flatbuffer_utils.read_model(str(path))
    subgraph = model.subgraphs[0]
    constant = collections.Counter()
    quantisation = collections.Counter()
    names = 0
    seen_buffers = set()
    for tensor in subgraph.tensors:
        names += len(tensor.name or b"")
        data = model.buffers[tensor.buffer].data
        if data is not None and len(data) and tensor.buffer not in seen_buffers:
            seen_buffers.add(tensor.buffer)
            constant[TYPE_NAMES[tensor.type]] += len(data)
        q = tensor.quantization
        if q is not None:
            count = 0 if q.scale is None else len(q.scale)
            kind = "per_channel" if count > 1 else "per_tensor"
            quantisation[f"{kind}_scale_float32"] += 4 * count
            quantisation[f"{kind}_zero_point_int64"] += 8 * (
                0 if q.zeroPoint is None else len(q.zeroPoint)
            )
            quantisation[f"{kind}_min_max_float32"] += 4 * sum(
                len(v) for v in (q.min, q.max) if v is not None
            )
            quantisation[f"{kind}_channels"] += count if count > 1 else 0
    size = path.stat().st_size
    known = (
        sum(constant.values())
        + sum(v for k, v in quantisation.items() if not k.endswith("_channels"))
        + names
    )
    return {
        "file": path.name,
        "size_bytes": size,
        "constant_data_bytes": dict(constant),
        "quantisation_bytes": {k: v for k, v in quantisation.items() if v},
        "tensor_name_bytes": names,
        "graph_and_overhead_bytes": size - known,
        "tensors": len(subgraph.tensors),
        "operators": len(subgraph.operators),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--json", type=Path, help="also write the breakdowns here")
    args = parser.parse_args(argv)
    results = [breakdown(path) for path in args.models]
    for result in results:
        print(
            f"{result['file']}: {result['size_bytes'] / 1e3:.1f} kB, {result['tensors']} tensors, "
            f"{result['operators']} ops"
        )
        for kind, value in sorted(result["constant_data_bytes"].items()):
            print(f"  constant {kind:<10} {value / 1e3:9.1f} kB")
        for kind, value in sorted(result["quantisation_bytes"].items()):
            unit = "" if kind.endswith("_channels") else " kB"
            print(f"  {kind:<34} {value / (1 if unit == '' else 1e3):9.1f}{unit}")
        print(f"  tensor names {result['tensor_name_bytes'] / 1e3:20.1f} kB")
        print(f"  graph and flatbuffer overhead {result['graph_and_overhead_bytes'] / 1e3:5.1f} kB")
    if args.json:
        args.json.write_text(
            json.dumps(
                results, indent=2, default=lambda v: v.item() if isinstance(v, np.generic) else v
            )
        )


if __name__ == "__main__":
    main()
