"""Classify image files with a promoted network, loaded by its registry alias.

    python -m mixmo_search.predict --model models:/mixmo-NAME@champion --images DIR_OR_FILES

Each image is read with PIL, converted to the network's channels (L or RGB) and, when its size
differs, resized to the network's square input. One tab-separated line per image gives the
file, the ensemble class, its confidence (softmax of the mean of the heads' logits) and each
member's vote, after a header line.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor

from mixmo_search.config import DEVICES
from mixmo_search.errors import DataError, Parser, exit_on_user_error
from mixmo_search.images import IMAGE_EXTENSIONS, read_image


def image_files(paths: Sequence[str | Path]) -> list[Path]:
    """The files named, and the image files under the folders named, in order."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                raise DataError(
                    f"{path} holds no image files ({', '.join(IMAGE_EXTENSIONS)}); "
                    "pass image files or a folder of them with --images"
                )
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise DataError(f"--images: {path} does not exist; pass image files or folders")
    return files


def read_images(files: Sequence[Path], *, in_channels: int, image_size: int) -> Tensor:
    """(N, in_channels, image_size, image_size) uint8 pixels of `files`; a file PIL cannot
    decode is one DataError naming it."""
    import numpy as np
    from PIL import Image

    mode = {1: "L", 3: "RGB"}.get(in_channels)
    if mode is None:
        raise DataError(f"the network takes {in_channels}-channel images; PIL reads 1 or 3")
    pixels = []
    for file in files:
        image = read_image(file, mode)
        if image.size != (image_size, image_size):
            image = image.resize((image_size, image_size), Image.Resampling.BILINEAR)
        array = np.asarray(image, dtype=np.uint8).reshape(image_size, image_size, -1)
        pixels.append(torch.from_numpy(array.copy()).permute(2, 0, 1))  # (C, H, W)
    return torch.stack(pixels)


MODES = {1: "L (greyscale)", 3: "RGB"}  # PIL mode per channel count
IMAGES_HELP = """\
What a model takes: its MLflow signature's input, float32 (N, C, H, W) raw pixels in
[0, 255]. Each file is read with PIL, converted to the model's mode (C = 1: L, greyscale;
C = 3: RGB) and, when its size differs, resized (bilinear) to H x W. By training data set:
digits: L 8x8; cifar10, cifar100: RGB 32x32; tinyimagenet: RGB 64x64; imagefolder: the
channels and data.image_size it trained with. `--model URI --help` reads that model's own
signature (in $MLFLOW_TRACKING_URI, else ./mlflow.db, or --mlflow-uri)."""


def model_input(model: str, tracking_uri: str | None) -> str:
    """What the model `model` takes, from its signature, e.g. `L (greyscale) 8x8 images`;
    a sentence saying why not when it cannot be read."""
    import mlflow

    from mixmo_search import tracking
    from mixmo_search.serving import fluent_tracking_uri

    try:
        with fluent_tracking_uri(tracking_uri or tracking.default_tracking_uri()):
            signature = mlflow.models.get_model_info(model).signature
        _, channels, height, width = signature.inputs.inputs[0].shape
    except Exception as err:  # noqa: BLE001 - help text: say why, never fail
        return f"its signature could not be read ({type(err).__name__}: {str(err)[:120]})"
    mode = MODES.get(channels, f"{channels}-channel")
    shape = f"float32 (N, {channels}, {height}, {width})"
    return f"{mode} {height}x{width} images (signature: {shape})"


def _parser(argv: list[str]) -> Parser:
    epilog = IMAGES_HELP
    if {"-h", "--help"} & set(argv) and "--model" in argv[:-1]:  # this model's own input
        model = argv[argv.index("--model") + 1]
        uri = argv[argv.index("--mlflow-uri") + 1] if "--mlflow-uri" in argv[:-1] else None
        epilog += f"\n\n{model} takes {model_input(model, uri)}."
    return Parser(
        prog="python -m mixmo_search.predict",
        description="Print each image's ensemble class, confidence and the members' votes.",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = _parser(argv)
    parser.add_argument(
        "--model", required=True,
        help="models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/PATH, or a model's folder",
    )  # fmt: skip
    parser.add_argument(
        "--images", required=True, nargs="+",
        help="image files or folders (any size and mode PIL reads: see below)",
    )  # fmt: skip
    parser.add_argument(
        "--mlflow-uri", help="tracking and registry store (default $MLFLOW_TRACKING_URI, else "
        "sqlite:///mlflow.db in the working directory)",
    )  # fmt: skip
    parser.add_argument("--device", default="cpu", choices=DEVICES, help="where to run")
    args = parser.parse_args(argv)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    from mixmo_search.serving import classify, load_network

    files = image_files(args.images)  # before loading: a typo should not wait for the model
    network = load_network(args.model, tracking_uri=args.mlflow_uri, device=args.device)
    fmt = network.input_format
    images = read_images(files, in_channels=fmt.in_channels, image_size=fmt.image_size)
    result = classify(network, images)
    print("file\tclass\tconfidence\tvotes")
    columns = (files, result.classes.tolist(), result.confidence.tolist(), result.votes.T.tolist())
    for file, cls, confidence, votes in zip(*columns, strict=True):
        print(f"{file}\t{cls}\t{confidence:.4f}\t{','.join(map(str, votes))}")


if __name__ == "__main__":
    main()
