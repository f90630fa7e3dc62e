"""predict: a folder of PNG digits through the CLI, against the promoted network's own output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from mixmo_search.predict import image_files, main, read_images
from mixmo_search.promote import promote
from mixmo_search.serving import classify, load_network


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
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
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
        ("{champion}", "{tmp}/broken.png", "cannot read image"),
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
