"""cost: parameters, FLOPs and images/s of the test-time pass, and the trainer logging them."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from mixmo_search.config import resolve_config
from mixmo_search.cost import count_params, forward_flops, images_per_second, inference_cost
from mixmo_search.models import create_model, list_models
from mixmo_search.train import EpochReport, train

N_CLASSES = 10


def test_a_linear_layer_costs_its_multiply_adds():
    layer = nn.Linear(12, 5)
    assert count_params(layer) == 12 * 5 + 5
    assert forward_flops(layer, torch.zeros(1, 12)) == 2 * 12 * 5
    with pytest.raises(ValueError, match="one image"):
        forward_flops(layer, torch.zeros(2, 12))


@pytest.mark.parametrize("name", list_models())
def test_members_share_one_test_time_forward(name):
    """The encoders sum into one conv (docs/method.md §Inference), so M = 3 costs one core
    forward plus two more heads; its parameters are two more encoders and heads."""
    with torch.device("meta"):  # shapes only: FLOPs and parameter counts need no values
        nets = {m: create_model(name, n_members=m, num_classes=N_CLASSES).eval() for m in (1, 3)}
        image = torch.zeros(1, 3, 16, 16)
        flops = {m: forward_flops(net, image) for m, net in nets.items()}
    feature_dim = nets[1].head.in_features
    assert flops[3] - flops[1] == 2 * (2 * feature_dim * N_CLASSES)
    encoder = count_params(nets[1].encoders[0])
    head = feature_dim * N_CLASSES + N_CLASSES
    assert count_params(nets[3]) - count_params(nets[1]) == 2 * (encoder + head)


def test_images_per_second_times_the_forward():
    calls = []

    def slow_forward(images: torch.Tensor) -> torch.Tensor:
        calls.append(len(images))
        time.sleep(0.05)  # a forward of exactly known minimum duration
        return images

    rate = images_per_second(slow_forward, torch.zeros(10, 3), min_seconds=0.3)
    assert len(calls) >= 1 + 6  # the warm-up, then >= 0.3 s of 0.05 s forwards
    assert 100 < rate <= 10 / 0.05  # sleep never returns early; a busy machine adds a little


@pytest.fixture(scope="module")
def one_epoch(tmp_path_factory):
    cfg = resolve_config(
        preset="digits_quick",
        overrides={"optim.epochs": 1, "run.progress": False,
                   "run.out_dir": str(tmp_path_factory.mktemp("cost") / "run")},
    )  # fmt: skip
    reports: list[EpochReport] = []
    return cfg, train(cfg, on_epoch=reports.append), reports


def test_train_returns_and_reports_the_cost_of_its_network(one_epoch):
    cfg, results, reports = one_epoch
    model = create_model(cfg.model.name, n_members=cfg.model.n_members, num_classes=10,
                         in_channels=1)  # fmt: skip
    assert results["cost/params"] == count_params(model)
    with torch.no_grad():
        flops = forward_flops(model.eval(), torch.zeros(1, 1, 8, 8))
    assert results["cost/flops"] == flops > 0
    assert results["cost/images_per_s"] > 0
    written = json.loads((Path(cfg.run.out_dir) / "metrics.json").read_text())
    assert {k: written[k] for k in results if k.startswith("cost/")} == {
        k: results[k] for k in ("cost/params", "cost/flops", "cost/images_per_s")
    }
    # the last epoch's report carries them as final metrics, which the search logs to MLflow
    last = reports[-1].metrics
    assert last["final/cost/params"] == results["cost/params"]
    assert last["final/cost/flops"] == results["cost/flops"]


def test_inference_cost_names():
    layer = nn.Linear(4, 2)
    cost = inference_cost(layer, layer, torch.zeros(8, 4), min_seconds=0.01)
    assert sorted(cost) == ["cost/flops", "cost/images_per_s", "cost/params"]
