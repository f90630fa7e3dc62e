"""Host syncs of the training step: which lines make the host wait for the device, how often.

    python benchmarks/sync_audit.py --preset digits_quick
    python benchmarks/sync_audit.py --preset cifar100_cut_mixmo_cutmix --set run.device=cuda ...

Runs the real trainer (`mixmo_search.train.train`, eager) for a few short epochs and records,
with the line of `mixmo_search` that asked for it, every op that waits for the device:
`_local_scalar_dense` (`.item()`, `bool(t)`, `int(t)`), the ops whose output size depends on
the data (`nonzero`, `masked_select`, `unique`, ...) and, on CUDA, an op that mixes host and
device tensors (a copy through pageable memory is a stream sync). On CUDA it also counts
the syncs the CUDA runtime reports (`torch.cuda.set_sync_debug_mode`). The torch profiler
counts `aten::_local_scalar_dense` as a cross-check (it sees each op twice under the
recorder: as called and as re-dispatched; its Python stacks are too slow to take here).

A record is *in the step* when the trainer was inside its step loop (`for step, ... in`),
and a *device sync* when the tensor was on the device. On the CPU every tensor is a host
tensor, so there a line counts as a device sync unless its comment says `no device sync`
(house rule: every `.item()` or other host sync has a comment saying so).
"""

from __future__ import annotations

import argparse
import ast
import json
import linecache
import sys
import tempfile
import traceback
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mixmo_search import train as train_module  # noqa: E402
from mixmo_search.config import TrainConfig, resolve_config  # noqa: E402

SCALAR_READ = "_local_scalar_dense"
DATA_DEPENDENT = {"nonzero", "masked_select", "unique", "_unique", "_unique2", "unique_dim",
                  "unique_consecutive", "repeat_interleave", "bincount", "histc"}  # fmt: skip


def _step_loop_lines() -> range:
    """Source lines of train()'s step loop (`for step, ... in ...`), found in train.py."""
    source = Path(train_module.__file__).read_text()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.For) and isinstance(node.target, ast.Tuple):
            names = [e.id for e in node.target.elts if isinstance(e, ast.Name)]
            if names[:1] == ["step"]:
                return range(node.lineno, (node.end_lineno or node.lineno) + 1)
    raise RuntimeError("no `for step, ... in` loop in train.py: update sync_audit.py")


class _SyncRecorder(TorchDispatchMode):
    """Records ops that make the host wait, with the mixmo_search line that called them."""

    def __init__(self, step_lines: range) -> None:
        super().__init__()
        self.step_lines = step_lines
        self.records: Counter[tuple[str, str, str, bool]] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func.__name__.split(".")[0]
        out = func(*args, **kwargs)
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
        on_device = [t.device.type != "cpu" for t in tensors]
        if name == SCALAR_READ:
            self._record(name, device=on_device[0])
        elif name in DATA_DEPENDENT:
            self._record(name, device=any(on_device))
        elif any(on_device) and any(
            t.device.type == "cpu" and t.dim() > 0 for t in tensors
        ):  # host and device tensors in one op: a copy through pageable memory, a stream sync
            self._record(f"{name} (host <-> device copy)", device=True)
        return out

    def _record(self, op: str, *, device: bool) -> None:
        frames = [f for f in traceback.extract_stack() if "mixmo_search" in f.filename]
        if not frames:
            return
        where = frames[-1]
        in_step = any(
            f.filename == train_module.__file__ and f.name == "train"
            and f.lineno in self.step_lines for f in frames
        )  # fmt: skip
        location = f"{Path(where.filename).relative_to(ROOT)}:{where.lineno}"
        self.records[(location, op, "cuda" if device else "cpu", in_step)] += 1


def audit(cfg: TrainConfig) -> dict[str, Any]:
    """Train `cfg` eagerly and return the sync records, grouped by line."""
    from torch.profiler import ProfilerActivity, profile

    from mixmo_search.datasets import load_dataset

    steps = len(load_dataset(cfg.data).train) // cfg.unique_per_step  # as train() counts them
    epochs, steps = cfg.optim.epochs, min(steps, cfg.run.max_steps_per_epoch or steps)
    recorder = _SyncRecorder(_step_loop_lines())
    cuda = cfg.run.device == "cuda"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
        try:
            with profile(activities=[ProfilerActivity.CPU]) as prof, recorder:
                train_module.train(cfg)
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode("default")
    profiled = sum(e.count for e in prof.key_averages() if e.key == f"aten::{SCALAR_READ}")
    total_steps = epochs * steps
    rows = []
    for (location, op, device, in_step), count in sorted(recorder.records.items()):
        code = linecache.getline(str(ROOT / location.split(":")[0]), int(location.split(":")[1]))
        host_only = device == "cpu" and (cuda or "no device sync" in code)
        rows.append({
            "where": location, "code": code.strip(), "op": op, "device": device,
            "in_step": in_step, "count": count, "every_steps": round(total_steps / count, 2),
            "device_sync": not host_only,
        })  # fmt: skip
    cuda_warnings = Counter(
        f"{Path(w.filename).name}:{w.lineno}"
        for w in caught
        if "synchronizing" in str(w.message).lower()
    )
    step_syncs = sum(r["count"] for r in rows if r["in_step"] and r["device_sync"])
    return {
        "device": cfg.run.device,
        "epochs": epochs,
        "steps_per_epoch": steps,
        "records": rows,
        "device_syncs_per_step": round(step_syncs / total_steps, 4),
        "profiler_local_scalar_dense": profiled,
        "recorded_local_scalar_dense": sum(r["count"] for r in rows if r["op"] == SCALAR_READ),
        "cuda_sync_warnings": dict(cuda_warnings),
    }


def audit_config(preset: str, overrides: list[str], out_dir: str) -> TrainConfig:
    return resolve_config(
        preset=preset,
        overrides=[
            "optim.epochs=2",
            "run.max_steps_per_epoch=40",  # 1/20 and 1/25 syncs show twice an epoch
            *overrides,
            f"run.out_dir={out_dir}",
            "run.progress=false",
            "run.checkpoint=false",
            "run.compile=false",
        ],
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="digits_quick")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out_dir:
        result = audit(audit_config(args.preset, args.overrides, out_dir))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
