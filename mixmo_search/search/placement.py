"""Where trials train: the GPUs a local search may use, and the device Ray gives each trial.

Ray schedules trials by the GPUs the search declares (`--gpus`) and each trial's
`resources.gpus` (a whole number, or a share 1/k of one GPU so k trials train on it at once).
It sets each trial's `CUDA_VISIBLE_DEVICES` to the GPU ids it assigned, so a trial given a GPU
trains on `cuda`, which is that GPU, and a trial given none trains on the CPU. `place_trial`
makes that choice from what Ray assigned (not from what the plan hoped for) and records it:
every report carries `placement/*` strings and the trial's MLflow run the `mixmo.placement.*`
tags, so a search shows which GPU each trial trained on.

Testing aid, not a feature: `MIXMO_SIMULATE_GPUS=N` lets a machine without a GPU run a GPU
search as a test of the scheduling. It declares N logical GPUs to the local Ray, and trials
given a GPU (or a share) train on the CPU instead of `cuda`. It can never turn a real GPU
search into a CPU one: it is refused on a machine with a CUDA device, refused with
`--address`, announced in the printed plan and tagged on the search's MLflow run, and a
trial told to simulate refuses to start where CUDA is visible.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from mixmo_search import tracking
from mixmo_search.errors import UserError

SIMULATE_ENV = "MIXMO_SIMULATE_GPUS"
MAX_TRIALS_PER_GPU = 16  # shares down to 1/16 of a GPU; finer ones cannot hold a trial
PREFIX = "placement/"  # report keys; MLflow tags are `mixmo.placement.<name>`


@dataclass(frozen=True)
class LocalGpus:
    count: int  # GPUs this machine offers a local search
    simulated: bool  # logical GPUs from MIXMO_SIMULATE_GPUS: trials given one train on the CPU


def local_gpus(*, joining_cluster: bool = False) -> LocalGpus:
    """The CUDA devices of this machine, or the logical GPUs of `MIXMO_SIMULATE_GPUS`."""
    raw = os.environ.get(SIMULATE_ENV, "").strip()
    if joining_cluster:
        if raw not in ("", "0"):
            raise UserError(
                f"{SIMULATE_ENV}={raw} only simulates the GPUs of a local search; unset it to "
                "join a cluster with --address"
            )
        return LocalGpus(0, simulated=False)
    import torch

    real = torch.cuda.device_count()
    if raw in ("", "0"):
        return LocalGpus(real, simulated=False)
    if not raw.isdigit():
        raise UserError(
            f"{SIMULATE_ENV} must be a whole number of logical GPUs (a testing aid), got "
            f"{raw!r}; unset it for a real search"
        )
    if real:
        raise UserError(
            f"{SIMULATE_ENV}={raw} is a testing aid for machines without a GPU, but this "
            f"machine has {real} CUDA device(s); unset it so that trials train on the GPUs"
        )
    return LocalGpus(int(raw), simulated=True)


def check_share(gpus: float) -> float | None:
    """`resources.gpus` normalised (a share 1/k made exact), or None when it is not 1/k of a
    GPU for k in 2..MAX_TRIALS_PER_GPU, nor 0, nor a whole number of GPUs."""
    if gpus == 0 or gpus.is_integer():
        return gpus
    if gpus > 1:
        return None
    per_gpu = round(1 / gpus)
    if not 2 <= per_gpu <= MAX_TRIALS_PER_GPU or abs(1 / gpus - per_gpu) > 0.01:
        return None
    return 1 / per_gpu


@dataclass(frozen=True)
class Placement:
    """What Ray gave one trial, and the device its trainer uses."""

    device: str  # cuda or cpu: `run.device` of the trial
    gpu_ids: tuple[str, ...]  # Ray's ids of the trial's GPUs (one id for a share)
    gpu_share: float  # GPUs the trial holds: 0, a share 1/k, or a whole number
    visible: str  # the trial's CUDA_VISIBLE_DEVICES ("" when Ray set none)
    simulated: bool

    def report(self) -> dict[str, str]:
        """`placement/*` entries of every report (strings: not MLflow metrics)."""
        return {
            f"{PREFIX}device": self.device + (" (simulated GPU)" if self.simulated else ""),
            f"{PREFIX}gpu_ids": ",".join(self.gpu_ids),
            f"{PREFIX}gpu_share": f"{self.gpu_share:g}",
            f"{PREFIX}cuda_visible_devices": self.visible,
        }


def mlflow_tags(result: dict) -> dict[str, str]:
    """The trial's `mixmo.placement.*` tags from one of its reports ({} if it has none)."""
    return {
        tracking.PLACEMENT_PREFIX + key.removeprefix(PREFIX): str(value)
        for key, value in result.items()
        if key.startswith(PREFIX)
    }


def place_trial(*, simulated: bool) -> Placement:
    """Inside a Tune trial: the GPUs Ray assigned it and the device to train on.

    A share of a GPU also caps this process's CUDA memory at that share, so a trial that
    outgrows its share fails with an out-of-memory error of its own instead of crashing the
    trials it shares the GPU with.
    """
    import ray

    gpu_ids = tuple(str(i) for i in ray.get_gpu_ids())
    share = float(ray.get_runtime_context().get_assigned_resources().get("GPU", 0.0))
    placement = Placement(
        device="cpu" if simulated or not gpu_ids else "cuda",
        gpu_ids=gpu_ids,
        gpu_share=share,
        visible=os.environ.get("CUDA_VISIBLE_DEVICES", ""),
        simulated=simulated and bool(gpu_ids),
    )
    import torch

    if simulated and torch.cuda.is_available():
        raise RuntimeError(
            f"this trial was told to simulate its GPU ({SIMULATE_ENV}) but CUDA is visible "
            f"here ({torch.cuda.device_count()} devices); unset {SIMULATE_ENV}"
        )
    if placement.device == "cuda" and 0 < share < 1:
        limit_gpu_memory(share)
    return placement


def limit_gpu_memory(share: float) -> None:
    """Cap this process's CUDA caching allocator at `share` of the current GPU."""
    import torch

    torch.cuda.set_per_process_memory_fraction(share)
