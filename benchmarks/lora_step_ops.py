"""The work in one training step of the Dense stack, op by op (TensorFlow).

Run: `python benchmarks/lora_step_ops.py [--kinds lora_dense frozen_floor
keras_lora]`. Results go to `benchmarks/lora.md` (run 7).

Traces `model.train_step` (the step Keras's `fit` runs) of
`benchmarks/lora.py`'s Dense stack as a `tf.function`, lets Grappler
optimise it as the runtime does (pruning ops whose results nothing uses,
constant folding, ...), and lists what is left: the matrix products with
their shapes and multiply-adds, and the count of every other op type. Ops
that survive pruning run in every step; a gradient that nothing uses does
not. Needs the TensorFlow backend.
"""

import argparse
import collections
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["KERAS_BACKEND"] = "tensorflow"

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.core.protobuf import config_pb2  # noqa: E402
from tensorflow.core.protobuf import meta_graph_pb2  # noqa: E402
from tensorflow.python.grappler import tf_optimizer  # noqa: E402

import lora  # noqa: E402  (benchmarks/lora.py)


def optimized_graph(model, x, y):
    step = tf.function(model.train_step)
    concrete = step.get_concrete_function(
        (tf.constant(x), tf.constant(y))
    )
    graph = concrete.graph
    meta = tf.compat.v1.train.export_meta_graph(
        graph_def=graph.as_graph_def(add_shapes=True), graph=graph
    )
    fetch = meta_graph_pb2.CollectionDef()
    for t in concrete.outputs:
        fetch.node_list.value.append(t.name)
    meta.collection_def["train_op"].CopyFrom(fetch)
    config = config_pb2.ConfigProto()
    config.graph_options.rewrite_options.min_graph_nodes = -1
    return graph, tf_optimizer.OptimizeGraph(config, meta)


def _shape(graph, name):
    """Static shape of input `name` (`"op:i"` / `"op"`) in the traced graph,
    or None for a tensor Grappler created."""
    if name.startswith("^"):
        return None
    op_name, _, index = name.partition(":")
    try:
        op = graph.get_operation_by_name(op_name)
    except KeyError:
        return None
    return tuple(op.outputs[int(index or 0)].shape)


def matmuls(graph, graph_def):
    """`[(name, op, a shape, b shape, multiply-adds)]` of the matrix
    products left in `graph_def` (fused ones included), shapes from the
    traced `graph` (None if unknown)."""
    rows = []
    for node in graph_def.node:
        if "MatMul" not in node.op:
            continue
        a, b = (_shape(graph, i) for i in node.input[:2])
        macs = 0
        if a and b and len(a) == 2 and len(b) == 2:
            ta = node.attr["transpose_a"].b if "transpose_a" in node.attr else False
            tb = node.attr["transpose_b"].b if "transpose_b" in node.attr else False
            m, k = (a[1], a[0]) if ta else a
            n = b[0] if tb else b[1]
            macs = m * k * n
        rows.append((node.name, node.op, a, b, macs))
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--kinds", nargs="+",
        default=["frozen_floor", "lora_dense", "keras_lora", "full"],
    )
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(lora.BATCH, lora.WIDTH)).astype("float32")
    y = rng.normal(size=(lora.BATCH, lora.WIDTH)).astype("float32")
    for kind in args.kinds:
        model = lora.dense_stack(kind)
        model.optimizer.build(model.trainable_variables)
        graph, optimized = optimized_graph(model, x, y)
        rows = matmuls(graph, optimized)
        big = [r for r in rows if r[4] >= 10**7]
        print(f"\n## {kind}: {len(graph.get_operations())} ops traced, "
              f"{len(optimized.node)} after Grappler")
        print(f"matrix products: {len(rows)}, of which {len(big)} large "
              f"(>= 10M multiply-adds), {sum(r[4] for r in rows) / 1e6:.0f}M "
              f"multiply-adds in all")
        for name, op, a, b, macs in rows:
            if macs >= 10**5 or not macs:
                print(f"  {macs / 1e6:8.1f}M  {op} {a} x {b}  {name}")
        counts = collections.Counter(n.op for n in optimized.node)
        print("op types:", dict(sorted(counts.items())))


if __name__ == "__main__":
    main()
