"""predict: a folder of PNG digits through the CLI, against the promoted network's own output."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mixmo_search.errors import DataError
from mixmo_search.predict import image_files, main, read_images
from mixmo_search.promote import promote
from mixmo_search.serving import classify, load_network
from tests.waiting import scaled


@pytest.fixture(scope="module")
def promoted(search_store, private_store, tmp_path_factory) -> tuple[str, str]:
    """(tracking URI, model URI) of the fixture search's promoted champion."""
    store = private_store(tmp_path_factory.mktemp("predict-store"))
    result = promote(search_store.name, tracking_uri=store)
    return store, result.model_uri


@pytest.fixture(scope="module")
def digit_folder(promoted, tmp_path_factory) -> Path:
    """The first 12 test digits as 8x8 grayscale PNG files."""
    from mixmo_search.datasets import load_dataset

    network = load_network(promoted[1], tracking_uri=promoted[0])
    folder = tmp_path_factory.mktemp("digits")
    test = load_dataset(network.config.data).test
    for i in range(12):
        Image.fromarray(test.images[i, 0].numpy()).save(folder / f"{i:02d}.png")
    return folder


def test_cli_prints_class_confidence_and_votes_per_image(promoted, digit_folder, tmp_path):
    store, model_uri = promoted
    done = subprocess.run(
        [sys.executable, "-m", "mixmo_search.predict", "--model", model_uri,
         "--images", str(digit_folder), "--mlflow-uri", store],
        capture_output=True, text=True, timeout=scaled(300), cwd=tmp_path,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    header, *lines = done.stdout.strip().splitlines()
    assert header == "file\tclass\tconfidence\tvotes"
    assert len(lines) == 12

    network = load_network(model_uri, tracking_uri=store)
    files = image_files([digit_folder])
    fmt = network.input_format
    expected = classify(network, read_images(files, in_channels=1, image_size=fmt.image_size))
    for i, line in enumerate(lines):
        file, cls, confidence, votes = line.split("\t")
        assert Path(file) == files[i]
        assert int(cls) == expected.classes[i].item()
        assert float(confidence) == pytest.approx(expected.confidence[i].item(), abs=1e-4)
        assert [int(v) for v in votes.split(",")] == expected.votes[:, i].tolist()
    assert len(lines[0].split("\t")[3].split(",")) == network.model.n_members


def test_read_images_converts_mode_and_size(tmp_path):
    rgb = np.zeros((16, 16, 3), dtype=np.uint8)
    rgb[:8] = 255  # top half white
    Image.fromarray(rgb).save(tmp_path / "a.png")
    gray = read_images([tmp_path / "a.png"], in_channels=1, image_size=8)
    assert gray.shape == (1, 1, 8, 8) and gray.dtype == torch.uint8
    assert gray[0, 0, :3].min() == 255 and gray[0, 0, -3:].max() == 0
    assert read_images([tmp_path / "a.png"], in_channels=3, image_size=16).shape == (1, 3, 16, 16)


@pytest.mark.parametrize(
    ("model", "images", "expected"),
    [
        ("models:/mixmo-{search}@nope", "{digits}", "alias nope not found"),
        ("models:/no-such-model@champion", "{digits}", "no-such-model not found"),
        ("{champion}", "{tmp}/missing.png", "missing.png does not exist"),
        ("{champion}", "{tmp}", "holds no image files"),
        ("{champion}", "{tmp}/broken.png", "cannot decode image"),
        ("{champion}", "{digits}", "no MLflow store"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    search_store, promoted, digit_folder, tmp_path, model, images, expected, capsys
):
    store, model_uri = promoted
    (tmp_path / "broken.png").write_text("not a png")
    if images == "{tmp}":
        (tmp_path / "broken.png").unlink()  # an empty folder
    fill = {"{digits}": str(digit_folder), "{tmp}": str(tmp_path), "{champion}": model_uri,
            "{search}": search_store.name}  # fmt: skip
    for key, value in fill.items():
        model, images = model.replace(key, value), images.replace(key, value)
    if expected == "no MLflow store":
        store = f"sqlite:///{tmp_path / 'none.db'}"
    with pytest.raises(SystemExit) as exited:
        main(["--model", model, "--images", images, "--mlflow-uri", store])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1 and expected in err
    assert not (tmp_path / "none.db").exists()


def test_an_image_past_pils_pixel_cap_is_one_line_and_exit_2(promoted, tmp_path, capsys):
    store, model_uri = promoted
    side = 13_500  # 182 megapixels: PIL refuses to decode it (decompression-bomb guard)
    Image.new("L", (side, side)).save(tmp_path / "huge.png", optimize=False)
    with pytest.raises(SystemExit) as exited:
        main(["--model", model_uri, "--images", str(tmp_path / "huge.png"), "--mlflow-uri", store])
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "huge.png" in err and "resize it" in err


def test_non_finite_outputs_are_refused_not_printed(promoted, digit_folder):
    from mixmo_search.inference import build_network
    from mixmo_search.serving import NonFiniteOutput

    store, model_uri = promoted
    network = load_network(model_uri, tracking_uri=store)
    broken = {k: v.clone() for k, v in network.model.state_dict().items()}
    stem = next(k for k, v in broken.items() if v.dim() == 4)  # a first conv: feeds every image
    broken[stem].view(-1)[0] = float("nan")
    broken_net = build_network(network.config, network.input_format, broken)
    images = read_images(image_files([digit_folder]), in_channels=1, image_size=8)
    assert torch.isfinite(classify(network, images).confidence).all()  # the intact network
    with pytest.raises(NonFiniteOutput, match="non-finite outputs for 12 of 12 images"):
        classify(broken_net, images)


# --- bad image files: one line naming the file (issue 17) ---


def _encoded(fmt: str, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (8, 8), 90).save(buffer, fmt)
    return buffer.getvalue()


def _broken_png() -> bytes:
    """Pixel data stopping half-way into a chunk of no known kind: SyntaxError in PIL."""
    data = _encoded("PNG")
    start = data.index(b"IDAT") - 4
    (length,) = struct.unpack(">I", data[start : start + 4])
    half = data[start + 8 : start + 8 + length // 2]
    idat = struct.pack(">I", len(half)) + b"IDAT" + half
    return data[:start] + idat + struct.pack(">I", zlib.crc32(b"IDAT" + half)) + b"\0\0\0\5!!!!"


@pytest.mark.parametrize(
    ("name", "data", "expected"),
    [
        ("broken.png", _broken_png(), "(SyntaxError: broken PNG file"),
        ("bad.ppm", b"P6\n8 8\n-1\n" + bytes(192), "(ValueError: maxval must be"),
        ("cut.jpg", _encoded("JPEG")[:150], "(OSError: "),
    ],
    ids=["broken PNG", "malformed PPM", "truncated JPEG"],
)
def test_an_undecodable_image_is_one_line_and_exit_2(
    promoted, tmp_path, capsys, name, data, expected
):
    store, model_uri = promoted
    (tmp_path / name).write_bytes(data)
    with pytest.raises(SystemExit) as exited:
        main(["--model", model_uri, "--images", str(tmp_path), "--mlflow-uri", store])
    assert exited.value.code == 2
    out = capsys.readouterr()
    (line,) = out.err.strip().splitlines()
    assert line.startswith(f"error: cannot decode image {tmp_path / name} {expected}")
    assert out.out == ""


@st.composite
def damaged_images(draw: st.DrawFn) -> bytes:
    """A valid PNG, JPEG, PPM, BMP, GIF, TIFF or WebP file cut short or with bytes changed, or
    random bytes."""
    fmt = draw(st.sampled_from(["PNG", "JPEG", "PPM", "BMP", "GIF", "TIFF", "WEBP"]))
    data = bytearray(_encoded(fmt, draw(st.sampled_from(["L", "RGB"]))))
    how = draw(st.sampled_from(["truncate", "flip", "random"]))
    if how == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if how == "flip":
        for at in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=6)):
            data[at] = draw(st.integers(0, 255))
        return bytes(data)
    return draw(st.binary(max_size=300))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(damaged=damaged_images(), channels=st.sampled_from([1, 3]), size=st.sampled_from([4, 8]))
def test_any_damaged_input_is_pixels_or_one_data_error(damaged, channels, size):
    with tempfile.TemporaryDirectory() as tmp:
        good, bad = Path(tmp) / "good.png", Path(tmp) / "bad.img"
        Image.new("RGB", (8, 8)).save(good)
        bad.write_bytes(damaged)
        try:
            pixels = read_images([good, bad], in_channels=channels, image_size=size)
        except DataError as err:
            assert str(bad) in str(err) and "\n" not in str(err), str(err)
            return
        assert pixels.shape == (2, channels, size, size) and pixels.dtype == torch.uint8


# --- model URIs: the forms it reads, one line for the others, nothing left behind ---


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """This process's temporary folder, so a test can see what is left in it."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("http://127.0.0.1:1/model", "http: URIs are not read here; give models:/NAME@ALIAS"),
        ("https://example.invalid/m", "https: URIs are not read here"),
        ("s3://bucket/model", "s3: URIs are not read here"),
        ("gs://bucket/model", "gs: URIs are not read here"),
        ("mlflow-artifacts:/x/model", "mlflow-artifacts: URIs are not read here"),
        ("{tmp}/no-such-folder", "no such folder; give models:/NAME@ALIAS"),
        ("{tmp}", "has no artifacts/network.json and artifacts/weights.pt"),
        ("{garbage}", "its network files cannot be read"),
        ("", "the model URI is empty"),
        ("runs:/0123456789abcdef/model", "Run with id=0123456789abcdef not found"),
        ("models:/", "Not a proper models:/ URI"),
    ],
)
def test_unsupported_or_unreachable_models_are_one_line_and_leave_nothing(
    promoted, digit_folder, tmp_path, private_tmp, capsys, model, expected
):
    store, _ = promoted
    garbage = tmp_path / "garbage" / "artifacts"
    garbage.mkdir(parents=True)
    (garbage / "network.json").write_text("{}")
    (garbage / "weights.pt").write_bytes(b"not weights")
    model = model.replace("{tmp}", str(private_tmp)).replace("{garbage}", str(garbage.parent))
    with pytest.raises(SystemExit) as exited:
        main(["--model", model, "--images", str(digit_folder), "--mlflow-uri", store])
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: ") and expected in line, line
    assert not any(private_tmp.iterdir())


def test_a_model_loads_from_its_uri_and_its_local_folder_leaving_nothing(
    promoted, digit_folder, private_tmp, tmp_path
):
    import mlflow

    from mixmo_search.serving import fluent_tracking_uri

    store, model_uri = promoted
    by_uri = load_network(model_uri, tracking_uri=store)
    assert not any(private_tmp.iterdir())  # the download is gone once the network is loaded
    with fluent_tracking_uri(store):
        folder = mlflow.artifacts.download_artifacts(model_uri, dst_path=str(tmp_path / "m"))
    images = read_images(image_files([digit_folder]), in_channels=1, image_size=8)
    for local in (folder, Path(folder).as_uri()):
        by_folder = load_network(local)
        assert torch.equal(classify(by_folder, images).classes, classify(by_uri, images).classes)


def test_a_bad_model_uri_through_the_cli_leaves_no_temporary_folder(digit_folder, tmp_path):
    temp = tmp_path / "tmp"
    temp.mkdir()
    for model in ("http://127.0.0.1:1/model", "s3://bucket/model"):
        done = subprocess.run(
            [sys.executable, "-m", "mixmo_search.predict", "--model", model,
             "--images", str(digit_folder)],
            capture_output=True, text=True, timeout=scaled(300), cwd=tmp_path,
            env={**os.environ, "TMPDIR": str(temp)},
        )  # fmt: skip
        assert done.returncode == 2 and "Traceback" not in done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "URIs are not read" in done.stderr
        assert not any(temp.iterdir()) and sorted(p.name for p in tmp_path.iterdir()) == ["tmp"]


def test_help_says_what_images_each_model_takes(promoted, capsys):
    store, model_uri = promoted
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert "digits: L 8x8; cifar10, cifar100: RGB 32x32; tinyimagenet: RGB 64x64" in text
    assert "$MLFLOW_TRACKING_URI" in text
    with pytest.raises(SystemExit):
        main(["--model", model_uri, "--mlflow-uri", store, "--help"])
    own = capsys.readouterr().out
    network = load_network(model_uri, tracking_uri=store)
    fmt = network.input_format
    assert (fmt.in_channels, fmt.image_size) == (1, 8)  # the fixture's digits network
    assert f"{model_uri} takes L (greyscale) 8x8 images (signature: float32 (N, 1, 8, 8))" in own
