"""checkpoint: what a resume needs survives a round trip, writes are all or nothing, and
loading refuses anything but tensors and plain data (weights_only)."""

from __future__ import annotations

import pytest
import torch

from mixmo_search import checkpoint


def test_a_checkpoint_round_trips_weights_optimizer_and_rng(tmp_path):
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    host = torch.Generator().manual_seed(7)
    torch.manual_seed(3)
    path = tmp_path / "deep" / checkpoint.LAST
    checkpoint.save(path, {"model": model.state_dict(), "optimizer": opt.state_dict(),
                           "rng": checkpoint.rng_state(host), "epoch": 4})  # fmt: skip
    expected = (torch.rand(3), torch.rand(3, generator=host))
    torch.manual_seed(99)  # move both generators on
    host.manual_seed(99)
    state = checkpoint.load(path)
    checkpoint.set_rng_state(state["rng"], host)
    assert torch.equal(torch.rand(3), expected[0]) and torch.equal(
        torch.rand(3, generator=host), expected[1]
    )
    twin = torch.nn.Linear(3, 2)
    twin.load_state_dict(state["model"])
    assert all(
        torch.equal(a, b) for a, b in zip(twin.parameters(), model.parameters(), strict=True)
    )
    assert state["epoch"] == 4 and "momentum_buffer" in str(state["optimizer"])
    assert [p.name for p in path.parent.iterdir()] == [checkpoint.LAST]  # no temporary left


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / checkpoint.BEST
    checkpoint.save(path, {"epoch": 1})

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle this")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        checkpoint.save(path, {"epoch": 2, "bad": Unsaveable()})
    assert checkpoint.load(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == [checkpoint.BEST]


class Payload:
    """Stands for code a crafted checkpoint would run when unpickled."""


def test_loading_refuses_arbitrary_objects(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"x": Payload()}, path)
    with pytest.raises(checkpoint.CheckpointError, match="not a checkpoint this trainer wrote"):
        checkpoint.load(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage", bytes(range(256)) * 8, b"PK\x03\x04truncated zip"],
    ids=["empty", "text", "bytes", "truncated-zip"],
)
def test_a_damaged_checkpoint_is_one_clear_error(tmp_path, content):
    """Found by a hostile check (issue 17): a garbage last.pt gave PyTorch's weights-only
    advice, which is wrong here."""
    path = tmp_path / "last.pt"
    path.write_bytes(content)
    with pytest.raises(checkpoint.CheckpointError, match=f"{path} is not a checkpoint"):
        checkpoint.load(path)
    torch.save({"model": {}}, path)  # a real file of the wrong content
    with pytest.raises(checkpoint.CheckpointError, match="lacks optimizer"):
        checkpoint.load(path, keys=checkpoint.LAST_KEYS)


def test_the_code_revision_is_the_checkout_or_the_images_pin():
    revision = checkpoint.code_revision()
    assert revision == "unknown" or len(revision) == 40
