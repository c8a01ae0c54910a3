"""Weight codecs (``tvmq.weight_codecs``): int8 / int4 / lut round trips, exact on any int8 array a
target packs (zero padding, int32 words), then the artifact: a W4 compile stores two weights a byte,
``tvmq.load`` decodes them to the very arrays the module was built with, old artifacts still load.

    x[1,8,12,12] --conv_a 3x3 + bias + relu--> r --conv_b 1x1 + bias--> y      (onnx_models.conv_chain)
"""

import json

import numpy as np
import pytest

import tvmq
from tvmq import weight_codecs
from tvmq.data import Dataset
from tvmq.errors import TvmqError

from onnx_models import conv_chain, save


@pytest.mark.parametrize("codec, values", [
    ("int4", np.arange(-8, 8)), ("int8", np.arange(-128, 128)), ("lut", np.array([-120, -7, 0, 3, 99])),
    ("lut", np.arange(-64, 64)),  # 128 levels: 7-bit indices
])
@pytest.mark.parametrize("shape", [(0,), (1,), (7,), (3, 5, 2), (2, 3, 3, 16, 4)])
def test_every_codec_gives_the_array_back_exactly(rng, codec, values, shape):
    q = rng.choice(values, size=shape).astype(np.int8)
    arrays, entry = weight_codecs.encode("p0", q, codec)
    back = weight_codecs.decode("p0", arrays, entry)
    assert back.dtype == np.int8 and back.shape == q.shape and np.array_equal(back, q)
    assert entry["int8_bytes"] == q.size and entry["stored_bytes"] == sum(a.nbytes for a in arrays.values())


def test_int4_is_two_signed_nibbles_a_byte_low_first():
    arrays, entry = weight_codecs.encode("w", np.array([-8, 7, 1], np.int8), "int4")
    assert arrays["w"].tolist() == [0x78, 0x01] and entry["stored_bytes"] == 2


@pytest.mark.parametrize("levels, bits", [(2, 1), (5, 3), (16, 4), (17, 5), (32, 5), (64, 6)])
def test_lut_stores_ceil_log2_k_bit_indices_and_a_k_entry_table(rng, levels, bits):
    q = rng.permutation(np.repeat(np.arange(levels) - levels // 2, 40)).astype(np.int8)
    arrays, entry = weight_codecs.encode("w", q, "lut")
    assert weight_codecs.index_bits(levels) == bits
    assert arrays["w.table"].size == levels and arrays["w"].size == -(-q.size * bits // 8)


def test_an_int32_word_param_is_coded_as_its_bytes(rng):
    words = rng.integers(-8, 8, size=(4, 3, 8)).astype(np.int8).view("<i4")  # CUDA's words of 4 weights
    arrays, entry = weight_codecs.encode("p", words, "int4")
    assert entry["stored_bytes"] == words.nbytes // 2
    back = weight_codecs.decode("p", arrays, entry)
    assert back.dtype == words.dtype and np.array_equal(back, words)


@pytest.mark.parametrize("codec, values, message", [
    ("int4", [-9, 0], r"param p: its values do not fit the int4 weight codec"),
    ("lut", list(range(-100, 100)), r"do not fit the lut weight codec"),
    ("zip", [0], r"unknown weight codec 'zip'; choose one of: int8, int4, lut"),
])
def test_a_value_a_codec_cannot_hold_is_one_line_error(codec, values, message):
    with pytest.raises(TvmqError, match=message) as err:
        weight_codecs.encode("p", np.array(values, np.int8), codec)
    assert "\n" not in str(err.value)


def test_a_packed_param_is_matched_to_its_layer_by_its_nonzero_values(rng):
    """Packing permutes and zero-pads: the count of every non-zero value identifies the layer."""
    w_a, w_b = rng.integers(-7, 8, size=(8, 8, 3, 3)).astype(np.int8), rng.integers(-127, 128, (6, 8)).astype(np.int8)
    packed_a = np.concatenate([rng.permutation(w_a.ravel()), np.zeros(40, np.int8)]).reshape(2, -1, 4)
    plan = {"layers": [{"tensor": "a", "node": "conv_a", "weight_bits": 4},
                       {"tensor": "b", "node": "fc", "weight_bits": 8, "weight_levels": 16}]}
    qdq = {"tensors": np.array(["a", "b"]), "weight_0": w_a, "weight_1": w_b}
    words_a = np.ascontiguousarray(w_a.transpose(0, 2, 3, 1)).view("<i4")  # CUDA: OHWI as int32 words of 4
    params = {"p0": packed_a, "p1": rng.normal(size=8).astype(np.float32), "p2": w_b.T.copy(),
              "p3": np.arange(8, dtype=np.int32), "p4": words_a}
    assert weight_codecs.weight_params(params, plan, qdq) == {"p0": ("conv_a", "int4"), "p2": ("fc", "lut"),
                                                              "p4": ("conv_a", "int4")}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """The conv chain compiled with 4- and with 8-bit weights, each saved."""
    folder = tmp_path_factory.mktemp("codecs")
    model = save(conv_chain(), folder / "chain.onnx")
    calib = Dataset(np.random.default_rng(0).normal(size=(16, 8, 12, 12)).astype(np.float32))
    built = {}
    for bits in (4, 8):
        compiled = tvmq.compile(model, calib, config=tvmq.Config(weight_bits=bits, latency_runs=1))
        built[bits] = compiled, compiled.save(folder / f"w{bits}")
    return built


def test_w4_artifact_stores_two_weights_a_byte_and_loads_bit_exact(artifacts, rng):
    compiled, out = artifacts[4]
    manifest = json.loads((out / "manifest.json").read_text())
    codecs = manifest["buckets"][0]["codecs"]
    assert {e["layer"]: e["codec"] for e in codecs.values()} == {"conv_a": "int4", "conv_b": "int4"}
    with np.load(out / "params.npz") as archive:
        assert all(archive[name].dtype == np.uint8 and archive[name].size == -(-e["int8_bytes"] // 2)
                   for name, e in codecs.items())
    storage = json.loads((out / "report.json").read_text())["weight_storage"]
    assert storage["ratio"] == 2.0 and storage["stored_bytes"] * 2 == storage["int8_bytes"]
    assert "## Weight storage" in (out / "report.md").read_text()
    deployed = tvmq.load(out)
    x = rng.normal(size=(1, 8, 12, 12)).astype(np.float32)
    assert np.array_equal(deployed.run(x), compiled.run(x))
    assert all(np.array_equal(deployed._modules[0][2][i].numpy(), value)
               for i, value in enumerate(compiled.params.values()))


def test_w8_artifact_keeps_its_weights_as_they_are(artifacts):
    compiled, out = artifacts[8]
    codecs = json.loads((out / "manifest.json").read_text())["buckets"][0]["codecs"]
    assert {e["codec"] for e in codecs.values()} == {"int8"}
    with np.load(out / "params.npz") as archive:
        assert sorted(archive.files) == sorted(compiled.params)
        assert all(np.array_equal(archive[name], value) for name, value in compiled.params.items())


def test_an_artifact_without_codecs_still_loads(artifacts, tmp_path, rng):
    import shutil

    compiled, out = artifacts[8]
    old = shutil.copytree(out, tmp_path / "old")
    manifest = json.loads((old / "manifest.json").read_text())
    for bucket in manifest["buckets"]:
        del bucket["codecs"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    x = rng.normal(size=(1, 8, 12, 12)).astype(np.float32)
    assert np.array_equal(tvmq.load(old).run(x), compiled.run(x))
