"""EasyQuant's search, on arrays: it improves the layer's cosine and handles grouped convs."""

import numpy as np
import onnx
from onnx import numpy_helper

import onnx_models
from reference import conv2d_int
from tvmq.api import prepare_fp32
from tvmq.frontend import load_model
from tvmq.passes.eq import LayerProblem, _apply, _cosine, _fake_act, _fake_weight, layer_problem, search
from tvmq.passes.graph import find_layers


def _layer(tmp_path, groups):
    path = onnx_models.save(onnx_models.conv_chain(channels=8, groups=groups, stride=2), tmp_path / "m.onnx")
    fp32 = prepare_fp32(load_model(path).mod)
    return next(iter(find_layers(fp32["main"]).values())), onnx.load(path)


def test_grouped_conv_as_matmul_matches_the_integer_reference(tmp_path, rng):
    layer, model = _layer(tmp_path, groups=4)
    weight = numpy_helper.to_array(model.graph.initializer[0])
    x = rng.integers(-5, 6, (2, 8, 12, 12)).astype(np.float32)
    w_int = np.round(weight * 10)
    layer.weight = w_int.astype(np.float32)
    problem = layer_problem(layer, x, x)
    reference = conv2d_int(x.astype(np.int64), w_int.astype(np.int64), 0, 2, 1, 1, 4)
    ours = problem.rows_fp @ problem.weight.T
    np.testing.assert_array_equal(ours, reference.transpose(0, 2, 3, 1).reshape(-1, 8))


def test_search_improves_cosine_over_minmax(rng):
    rows = np.concatenate([rng.standard_normal((2000, 64)), rng.standard_normal((5, 64)) * 20]).astype(np.float32)
    weight = (rng.standard_normal((16, 64)) * np.linspace(0.1, 3, 64)).astype(np.float32)
    weight[:, 0] *= 15  # an outlier weight per channel
    bias = np.zeros(16, np.float32)
    clamp = (-np.inf, np.inf)
    problem = LayerProblem(rows, rows, weight, bias, clamp, _apply(rows, weight, bias, clamp))
    act_range = (float(rows.min()), float(rows.max()))

    def score(rng_, w_scale):
        return _cosine(problem.target, _apply(_fake_act(rows, rng_, 1.0, "int8"),
                                              _fake_weight(weight, w_scale, 0), bias, clamp))

    minmax = score(act_range, np.abs(weight).max(1) / 127)
    found_range, found_scale = search(problem, act_range, "int8", per_channel=True)
    assert found_range[1] < act_range[1]  # it clips the outliers
    assert score(found_range, found_scale) > minmax
