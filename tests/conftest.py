import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session")
def bundled():
    """(model.onnx, calib.npz, eval.npz) of the bundled MNIST CNN, fetched once."""
    from tvmq.assets import bundled_mnist

    return bundled_mnist()


@pytest.fixture(scope="session")
def demo(tmp_path_factory, bundled):
    """The bundled model compiled untuned and saved: ``(artifact directory, CompiledModel)``."""
    import tvmq

    model, calib, evaluation = bundled
    out = tmp_path_factory.mktemp("demo") / "artifact"
    compiled = tvmq.compile(model, calib, eval_data=evaluation)
    compiled.save(out)
    return out, compiled


@pytest.fixture()
def rng():
    return np.random.default_rng(0)
