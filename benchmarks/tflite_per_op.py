"""Where a .tflite model's time goes: every op cut out into a model of its own (the same tensors, weights and
quantisation), timed in LiteRT with the XNNPACK delegate and with the builtin kernels, 1 thread; says whether
XNNPACK took the op. Sums per op kind (depthwise convolutions by kernel size) at the end.

    .venv/bin/python benchmarks/tflite_per_op.py MODEL.tflite [--runs 30] [--json OUT.json]

Single-op models miss the cache effects of the whole graph, so the sums are close to, not equal to, the
whole model's latency (benchmarks/latency.py). This is how BENCHMARKS.md's "Where the time goes, per op"
found the int8 7x7 depthwise and 1x1 convolutions that keep full int8 from being fast on x86.
"""

import argparse
import collections
import copy
import json
import time

import numpy as np
from ai_edge_litert import schema_py_generated as schema
from ai_edge_litert.interpreter import Interpreter, OpResolverType
from ai_edge_litert.tools import flatbuffer_utils

OP_NAMES = {
    code: name for name, code in schema.BuiltinOperator.__dict__.items() if not name.startswith("_")
}


def op_name(model, op) -> str:
    return OP_NAMES[
        flatbuffer_utils.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
    ]


def is_constant(model, subgraph, tensor: int) -> bool:
    data = model.buffers[subgraph.tensors[tensor].buffer].data
    return data is not None and len(data) > 0


def single_op_model(model, index: int) -> bytes:
    """The model reduced to its op `index`: the op's non-constant inputs become the model's inputs."""
    subgraph = model.subgraphs[0]
    op = subgraph.operators[index]
    alone, its_subgraph = copy.copy(model), copy.copy(subgraph)
    its_subgraph.operators = [op]
    its_subgraph.inputs = [t for t in op.inputs if t >= 0 and not is_constant(model, subgraph, t)]
    its_subgraph.outputs = list(op.outputs)
    alone.subgraphs, alone.signatureDefs = [its_subgraph], []
    return bytes(flatbuffer_utils.convert_object_to_bytearray(alone))


def median_ms(content: bytes, resolver, runs: int) -> tuple[float, bool]:
    """(median invoke time in ms, whether a delegate took the op)."""
    interpreter = Interpreter(
        model_content=content, num_threads=1, experimental_op_resolver_type=resolver
    )
    interpreter.allocate_tensors()
    delegated = any(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())
    rng = np.random.default_rng(0)
    for detail in interpreter.get_input_details():
        dtype = np.dtype(detail["dtype"])
        values = (
            rng.integers(-100, 100, detail["shape"])
            if dtype.kind in "iu"
            else rng.random(detail["shape"])
        )
        interpreter.set_tensor(detail["index"], values.astype(dtype))
    for _ in range(3):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1000.0, delegated


def profile(path: str, runs: int) -> list[dict]:
    model = flatbuffer_utils.read_model(path)
    subgraph = model.subgraphs[0]
    rows = []
    for index, op in enumerate(subgraph.operators):
        content = single_op_model(model, index)
        xnnpack_ms, delegated = median_ms(content, OpResolverType.AUTO, runs)
        builtin_ms, _ = median_ms(content, OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES, runs)
        weights = op.inputs[1] if len(op.inputs) > 1 else -1
        row = {
            "index": index,
            "op": op_name(model, op),
            "input": list(subgraph.tensors[op.inputs[0]].shape)[1:],
            "output": list(subgraph.tensors[op.outputs[0]].shape)[1:],
            "weights": (
                list(subgraph.tensors[weights].shape)
                if weights >= 0 and is_constant(model, subgraph, weights)
                else None
            ),
            "xnnpack_ms": xnnpack_ms,
            "xnnpack_took_it": delegated,
            "builtin_ms": builtin_ms,
            "output_name": subgraph.tensors[op.outputs[0]].name.decode(),
        }
        rows.append(row)
        print(
            f"{index:3d} {row['op']:18s} {str(row['input']):16s} -> {str(row['output']):16s} "
            f"weights {str(row['weights']):18s} xnnpack {xnnpack_ms:7.3f}{'' if delegated else ' (not taken)'} "
            f"builtin {builtin_ms:7.3f}",
            flush=True,
        )
    return rows


def op_kind(row: dict) -> str:
    if row["op"] == "DEPTHWISE_CONV_2D" and row["weights"]:
        return f"DEPTHWISE_CONV_2D {row['weights'][1]}x{row['weights'][2]}"
    return row["op"]


def print_summary(rows: list[dict]) -> None:
    totals = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for row in rows:
        total = totals[op_kind(row)]
        total[0] += 1
        total[1] += row["xnnpack_ms"]
        total[2] += row["builtin_ms"]
    print(f"\n{'op':26s} {'count':>5s} {'xnnpack ms':>10s} {'builtin ms':>10s}")
    for kind, (count, xnnpack, builtin) in sorted(
        totals.items(), key=lambda item: -max(item[1][1:])
    ):
        print(f"{kind:26s} {count:5d} {xnnpack:10.2f} {builtin:10.2f}")
    print(
        f"{'sum':26s} {len(rows):5d} {sum(r['xnnpack_ms'] for r in rows):10.2f} "
        f"{sum(r['builtin_ms'] for r in rows):10.2f}"
    )
    not_taken = collections.Counter(row["op"] for row in rows if not row["xnnpack_took_it"])
    print(f"not taken by XNNPACK: {dict(not_taken) or 'none'}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model", help="a .tflite file")
    parser.add_argument(
        "--runs", type=int, default=30, help="timed invokes per op and runtime (median counts)"
    )
    parser.add_argument("--json", help="also write every op's row here")
    args = parser.parse_args(argv)
    rows = profile(args.model, args.runs)
    print_summary(rows)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
