"""Contract tests for every registered model, on tiny inputs (B=2, 8x8) to stay fast on CPU."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mixmo_search.errors import UnknownModel
from mixmo_search.models import MixMoNet, create_model, list_models, register_model

BATCH, SIZE, NUM_CLASSES = 2, 8, 10
# Parameter counts at M=2, K=10 of the reference implementation's networks, counted there
# (docs/method.md §Architectures gives 36,486,036 for WRN-28-10).
REFERENCE_PARAMS = {
    "wrn28_10": 36_486_036,
    "wrn28_2": 1_469_332,
    "wrn16_4": 2_751_892,
    "wrn16_2": 693_396,
    "wrn10_1": 78_932,
    "preactresnet18": 11_178_004,
    "preactresnet18_2": 44_601_876,
    "preactresnet18_3": 100_262_932,
}
# Over 10M parameters: too slow on 2 CPU cores for the full contract, so these get the smoke
# test only. A new model gets the full contract until it is listed here.
HEAVY = {"preactresnet18", "preactresnet18_2", "preactresnet18_3", "wrn28_10"}


def _n_params(net: torch.nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


def _mixed_inputs(net: MixMoNet, *, size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """M different images and per-pixel masks that sum to 1 over members.

    (docs/method.md §Training step 5)
    """
    m, h = net.n_members, size // net.encoder_stride
    x = torch.randn(m, BATCH, 3, size, size)
    masks = torch.rand(m, BATCH, 1, h, h)
    return x, masks / masks.sum(0, keepdim=True)


@pytest.fixture(
    scope="module",
    params=[(name, m) for name in list_models() if name not in HEAVY for m in (1, 2, 3)],
    ids=lambda p: f"{p[0]}-M{p[1]}",
)
def net(request: pytest.FixtureRequest) -> MixMoNet:
    # Module scope: pytest groups the tests by model, so each (name, M) is built once.
    name, n_members = request.param
    torch.manual_seed(0)
    return create_model(name, n_members=n_members, num_classes=NUM_CLASSES)


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_both_modes(name: str) -> None:
    net = create_model(name, n_members=2, num_classes=NUM_CLASSES).eval()
    if name in REFERENCE_PARAMS:  # a model beyond the paper has no reference count
        assert _n_params(net) == REFERENCE_PARAMS[name]
    x, masks = _mixed_inputs(net)
    with torch.no_grad():
        assert net(x, masks).shape == (2, BATCH, NUM_CLASSES)
        assert net.ensemble_logits(x[0]).shape == (BATCH, NUM_CLASSES)


def test_output_shapes(net: MixMoNet) -> None:
    m = net.n_members
    net.train()
    x, masks = _mixed_inputs(net)
    assert net(x, masks).shape == (m, BATCH, NUM_CLASSES)
    linear_masks = torch.full((m, BATCH, 1, 1, 1), 1 / m)  # linear mixing: one kappa per sample
    assert net(x, linear_masks).shape == (m, BATCH, NUM_CLASSES)
    net.eval()
    assert net(x[0]).shape == (m, BATCH, NUM_CLASSES)


def test_ensemble_is_mean_of_heads(net: MixMoNet) -> None:
    net.eval()
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(net.ensemble_logits(x), net(x).mean(0))


def test_uniform_masks_on_one_image_equal_inference(net: MixMoNet) -> None:
    # MIMO with kappa = 1/M on identical inputs is the test-time sum
    # (docs/method.md §Training step 6, §Inference)
    m = net.n_members
    net.eval()
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    h = SIZE // net.encoder_stride
    masks = torch.full((m, BATCH, 1, h, h), 1 / m)
    with torch.no_grad():
        mixed = net(x.expand(m, *x.shape), masks)
        torch.testing.assert_close(mixed, net(x), rtol=1e-4, atol=1e-5)


def test_channels_last_matches_contiguous(net: MixMoNet) -> None:
    net.eval()
    x, masks = _mixed_inputs(net)
    with torch.no_grad():
        expected_mixed, expected_plain = net(x, masks), net(x[0])
        net.to(memory_format=torch.channels_last)
        try:
            mixed = net(x, masks)
            plain = net(x[0].contiguous(memory_format=torch.channels_last))
        finally:
            net.to(memory_format=torch.contiguous_format)
    torch.testing.assert_close(mixed, expected_mixed, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(plain, expected_plain, rtol=1e-4, atol=1e-5)


def test_gradient_reaches_every_encoder_and_head(net: MixMoNet) -> None:
    net.train()
    net.zero_grad(set_to_none=True)
    x, masks = _mixed_inputs(net)
    logits = net(x, masks)  # (M, B, K)
    labels = torch.randint(0, NUM_CLASSES, (net.n_members, BATCH))
    F.cross_entropy(logits.flatten(0, 1), labels.flatten()).backward()
    head_grads = net.head.weight.grad.unflatten(0, (net.n_members, NUM_CLASSES))
    for k, encoder in enumerate(net.encoders):
        assert encoder.weight.grad.abs().sum() > 0, f"no gradient in encoder {k}"
        assert head_grads[k].abs().sum() > 0, f"no gradient in head {k}"


def test_head_k_is_rows_k_of_the_linear() -> None:
    net = create_model("wrn10_1", n_members=2, num_classes=NUM_CLASSES).eval()
    x = torch.randn(BATCH, 3, SIZE, SIZE)
    with torch.no_grad():
        features = net.core(net.encoders[0](x) + net.encoders[1](x))
        head_1 = F.linear(features, net.head.weight[NUM_CLASSES:], net.head.bias[NUM_CLASSES:])
        torch.testing.assert_close(net(x)[1], head_1, rtol=1e-4, atol=1e-5)


def test_stem_stride_sizes_the_masks() -> None:
    net = create_model("wrn10_1", n_members=2, num_classes=NUM_CLASSES, stem_stride=2)
    assert net.encoder_stride == 2
    x, masks = _mixed_inputs(net, size=16)
    assert masks.shape[-2:] == (8, 8)
    assert net(x, masks).shape == (2, BATCH, NUM_CLASSES)


def test_bf16_autocast() -> None:
    net = create_model("wrn10_1", n_members=2, num_classes=NUM_CLASSES)
    x, masks = _mixed_inputs(net)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = net(x, masks)
        plain = net(x[0])
    assert logits.dtype == plain.dtype == torch.bfloat16
    assert logits.isfinite().all() and plain.isfinite().all()


def test_mixed_forward_rejects_wrong_member_count() -> None:
    net = create_model("wrn10_1", n_members=2, num_classes=NUM_CLASSES)
    with pytest.raises(ValueError, match="M=2"):
        net(torch.randn(3, BATCH, 3, SIZE, SIZE), torch.ones(3, BATCH, 1, SIZE, SIZE))


def test_a_member_costs_one_encoder_and_one_head() -> None:
    one, two = (create_model("wrn16_2", n_members=m, num_classes=10) for m in (1, 2))
    stem = 3 * 16 * 3 * 3
    head = 128 * 10 + 10
    assert _n_params(two) - _n_params(one) == stem + head


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(UnknownModel) as err:
        create_model("resnet9000", n_members=2, num_classes=10)
    assert "resnet9000" in str(err.value)
    assert all(name in str(err.value) for name in list_models())


def test_duplicate_registration_raises() -> None:
    def wrn28_10(**kwargs: int) -> MixMoNet:
        raise AssertionError("never built")

    with pytest.raises(ValueError, match="registered twice"):
        register_model(wrn28_10)
    assert list_models().count("wrn28_10") == 1
