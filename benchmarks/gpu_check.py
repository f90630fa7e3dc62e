"""One prepared device check of the trainer on one GPU: correctness, speed, memory, packing and
accuracy, written as one JSON and one Markdown report. One file on purpose: it is carried to
a borrowed GPU machine and run there with its own Python, in one call.

    python benchmarks/gpu_check.py --out benchmarks/gpu_check_out      # one H100/H200, <= 8 min
    python benchmarks/gpu_check.py --data cifar10_12k.npz              # and real CIFAR images
    python benchmarks/gpu_check.py --device cpu --quick                # its CPU side (CI runs it)

Every measurement runs the product's trainer, `mixmo_search.train.train` (through
`train_throughput.measure`): the same data path, mixing, model, optimizer, checkpoints and
evaluation a search trial runs, on data written as an image folder for the product's own
loader. Nothing of the training step is copied here. Sections, in the order they run; one
that would overrun `--budget-s` is skipped and says so, and the report is rewritten after
each, so a run stopped from outside still leaves what it measured:

1. syncs: `sync_audit.py` on the reference step (Cut-MixMo p=0.5 + input CutMix, b=4): the
   lines that make the host wait for the device, per step;
2. correctness: WRN-16-4 on the real data (digits upsampled to 32x32, or `--data`), 15
   epochs of 10 steps from one seed: bf16 against fp32, a repeat of the bf16 run (the run-
   to-run noise of cuDNN), and a run stopped after epoch 8 and resumed from its checkpoint
   against the straight run; epoch-mean train losses compared within stated tolerances;
3. throughput and peak memory: WRN-28-10, M=2, b=4, Cut-MixMo p=0.5 + input CutMix at 64
   (the reference batch), 128 and 256 slots and M=3 at 64, bf16, channels_last, eager;
4. accuracy: a short real-data run, val/test accuracy after its steps;
5. the 64-slot run compiled (`run.compile`), its loss curve checked against eager's;
6. packing: 1, 2 and 4 such trials on one GPU at once (separate processes, each capped at
   its share of memory as a search's `resources.gpus` share is), total slots/s;
7. more compiled variants while time is left: CUDA graphs (`run.compile_mode=
   reduce-overhead`), 256 slots, M=3, 128 slots;
8. projection: GPU-hours of the full 300-epoch CIFAR-100 recipe at the measured rates.

Compiled runs and packed trials run in worker processes (`--worker`, internal), killed when
the budget runs out; the rest runs in this process. On the CPU (`--device cpu`) compiled
runs are off unless `--compile`: inductor takes minutes on a small CPU.

Throughput runs on synthetic CIFAR-shaped data (100 classes, a fixed pattern per class plus
noise, so that losses fall and a compiled run can be checked against an eager one); the
speed of a step does not depend on what the pixels show.

`--data` takes an .npz of uint8 images (N, 32, 32, 3) and integer labels: keys `x_train`,
`y_train` and optionally `x_test`, `y_test` (else 10% of train is the test split). E.g. on
a machine that has CIFAR-10 (12k images, about 36 MB):

    import numpy as np, torchvision
    tr = torchvision.datasets.CIFAR10("data", train=True)
    te = torchvision.datasets.CIFAR10("data", train=False)
    np.savez("cifar10_12k.npz", x_train=tr.data[:10000], y_train=tr.targets[:10000],
             x_test=te.data[:2000], y_test=te.targets[:2000])
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import sync_audit  # noqa: E402
from train_throughput import measure, throughput_config  # noqa: E402

from mixmo_search.checkpoint import code_revision  # noqa: E402
from mixmo_search.config import DataConfig  # noqa: E402
from mixmo_search.datasets import load_dataset  # noqa: E402
from mixmo_search.train import DIVERGENCE_CHECK_STEPS, train  # noqa: E402

RECIPE = "cifar100_cut_mixmo_cutmix"  # WRN-28-10, M=2, b=4, Cut-MixMo p=0.5 + input CutMix
# tolerances on the epoch-mean train loss, as the largest relative gap over the epochs
PRECISION_TOL = 0.10  # bf16 vs fp32: bf16 rounds at 2^-9; a broken autocast misses by far more
COMPILE_TOL = 0.10  # compiled vs eager: inductor reorders float sums, then runs drift apart
RESUME_TOL = {"cuda": 0.02, "cpu": 1e-6}  # cuDNN's atomics on CUDA; the CPU repeats exactly
CIFAR100_TRAIN, RECIPE_EPOCHS = 45_000, 300  # the full recipe the projection is for
DIGITS_LR = 0.8  # per 128 unique images (digits_quick's): digits learn within a few epochs
DEFAULT_OUT = Path(__file__).resolve().parent / "gpu_check_out"


@dataclass(frozen=True)
class Sizes:
    small_model: str  # syncs, correctness, digits accuracy
    big_model: str  # throughput, packing, `--data` accuracy
    slots: tuple[int, ...]  # throughput batch sizes at M=2 (the first is the reference)
    steps: int  # steps per epoch of a throughput run (1 warm-up epoch + `measured`)
    measured: int
    check_epochs: int  # correctness: epochs of `check_steps` steps, stopped after `resume_at`
    check_steps: int
    resume_at: int
    sync_steps: int  # steps per epoch of the sync audit (2 epochs)
    batch: int  # slots a step of the syncs, correctness and accuracy runs
    packing: tuple[int, ...]
    accuracy_epochs: int
    accuracy_steps: int  # steps per epoch of the digits accuracy run (0: whole epochs)
    classes: int  # synthetic data: classes x per_class train images
    per_class: int
    threads: int  # CPU threads of a run (0: torch's default)


GPU = Sizes(
    small_model="wrn16_4",
    big_model="wrn28_10",
    slots=(64, 128, 256),
    steps=50,
    measured=3,
    check_epochs=15,
    check_steps=10,
    resume_at=8,
    sync_steps=40,
    batch=64,
    packing=(1, 2, 4),
    accuracy_epochs=10,
    accuracy_steps=0,
    classes=100,
    per_class=40,
    threads=0,
)
QUICK = Sizes(
    small_model="wrn10_1",
    big_model="wrn10_1",
    slots=(16, 32),
    steps=3,
    measured=2,
    check_epochs=5,
    check_steps=8,
    resume_at=3,
    sync_steps=20,
    batch=16,
    packing=(1, 2),
    accuracy_epochs=3,
    accuracy_steps=30,
    classes=10,
    per_class=40,
    threads=1,
)


class Stopped(Exception):
    """Raised after an epoch to stop a run as a crash would (its checkpoint is written)."""


# ---- data: image folders the product's loader reads --------------------------------------


def _write_folder(root: Path, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    from PIL import Image

    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        folder = root / split / f"c{int(label):03d}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i}.png", compress_level=1)


def synthetic_folder(root: Path, classes: int, per_class: int) -> Path:
    """CIFAR-shaped images: a smooth random pattern per class plus noise (learnable)."""
    gen = np.random.default_rng(0)
    patterns = gen.normal(0, 60, (classes, 4, 4, 3)).repeat(8, 1).repeat(8, 2)  # (K,32,32,3)
    for split, n in (("train", per_class), ("test", 1)):
        labels = np.repeat(np.arange(classes), n)
        noise = gen.normal(0, 40, (len(labels), 32, 32, 3))
        images = np.clip(128 + patterns[labels] + noise, 0, 255).astype(np.uint8)
        _write_folder(root, split, images, labels)
    return root


def real_folder(root: Path, data: Path | None) -> tuple[Path, str]:
    """`--data` as an image folder, or scikit-learn's digits upsampled to 32x32 RGB."""
    if data is None:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        digits = load_digits()
        pixels = np.round(digits.images * 255 / 16).astype(np.uint8)  # (N, 8, 8)
        images = pixels.repeat(4, 1).repeat(4, 2)[..., None].repeat(3, 3)  # (N, 32, 32, 3)
        train, test = train_test_split(
            np.arange(len(images)), test_size=0.2, stratify=digits.target, random_state=0
        )
        _write_folder(root, "train", images[train], digits.target[train])
        _write_folder(root, "test", images[test], digits.target[test])
        return root, "digits upsampled to 32x32 (scikit-learn)"
    with np.load(data) as npz:
        x = npz["x_train"] if "x_train" in npz else npz["images"]
        y = npz["y_train"] if "y_train" in npz else npz["labels"]
        held = ("x_test" in npz, "y_test" in npz) == (True, True)
        x_test, y_test = (npz["x_test"], npz["y_test"]) if held else (None, None)
    if x.ndim != 4 or x.dtype != np.uint8:
        raise SystemExit(f"--data {data}: images must be uint8 (N, H, W, C), got {x.shape}")
    if x_test is None:
        cut = len(x) * 9 // 10
        x, y, x_test, y_test = x[:cut], y[:cut], x[cut:], y[cut:]
    _write_folder(root, "train", x, np.asarray(y))
    _write_folder(root, "test", x_test, np.asarray(y_test))
    return root, f"{data.name}: {len(x)} train, {len(x_test)} test images"


def _warm_cache(root: Path, val_size: int) -> int:
    """Decode the folder once (the loader caches it) so that worker processes only read it."""
    cfg = DataConfig(name="imagefolder", root=str(root), val_size=val_size)
    return len(load_dataset(cfg).train)


# ---- running the trainer, in this process or in a worker process --------------------------


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one spec (see `Check.spec`) with `train_throughput.measure`."""
    cfg = throughput_config(
        spec["preset"],
        spec["overrides"],
        steps=spec["steps"],
        epochs=spec["epochs"],
        out_dir=spec["out_dir"],
    )
    share = spec.get("memory_share")
    if share and cfg.run.device == "cuda":  # as a trial holding a GPU share (search.placement)
        torch.cuda.set_per_process_memory_fraction(share)
    losses: list[float] = []

    def on_epoch(report: Any) -> None:
        losses.append(report.metrics["train/loss"])
        if spec.get("barrier") and report.epoch == 1:  # warmed up: measure all at once
            _barrier(Path(spec["barrier"]), spec["parties"])
        if report.epoch == spec.get("stop_after"):
            raise Stopped

    try:
        result = measure(cfg, on_epoch=on_epoch, resume=spec.get("resume", False))
    except Stopped:
        return {"stopped_after": spec["stop_after"], "train_loss": losses}
    if cfg.run.compile:
        result["compile"] = _compile_counters()
    return result


def _barrier(folder: Path, parties: int, timeout_s: float = 300) -> None:
    (folder / f"ready-{os.getpid()}").touch()
    deadline = time.monotonic() + timeout_s
    while len(list(folder.glob("ready-*"))) < parties and time.monotonic() < deadline:
        time.sleep(0.01)


def _compile_counters() -> dict[str, Any]:
    """What torch.compile did: graphs, recompiles, and whether CUDA graphs were skipped."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return {}
    return {
        "unique_graphs": counters["stats"].get("unique_graphs", 0),
        "cudagraph": {k: v for k, v in counters["inductor"].items() if "cudagraph" in k},
    }


def _worker(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    Path(spec["result"]).write_text(json.dumps(run_spec(spec)))


# ---- the check ----------------------------------------------------------------------------


class Check:
    """The sections in order, the time budget, and the report written after each section."""

    def __init__(self, args: argparse.Namespace, work: Path) -> None:
        self.args, self.work = args, work
        self.sizes = QUICK if args.quick else GPU
        self.device = args.device
        self.started = time.monotonic()
        self.report: dict[str, Any] = {"skipped": [], "errors": []}
        self.out = Path(args.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.units = 0

    # -- plumbing

    def left_s(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.started)

    def fits(self, what: str, estimate_s: float) -> bool:
        if self.left_s() >= estimate_s:
            return True
        self.report["skipped"].append(
            f"{what}: needs about {estimate_s:.0f} s, {max(0, self.left_s()):.0f} s of "
            f"--budget-s {self.args.budget_s:.0f} left"
        )
        return False

    def spec(self, overrides: list[str], *, steps: int, epochs: int, **extra: Any) -> dict:
        self.units += 1
        out_dir = self.work / f"run{self.units}"
        common = [f"run.device={self.device}", f"run.threads={self.sizes.threads}"]
        return {"preset": RECIPE, "overrides": common + overrides, "steps": steps,
                "epochs": epochs, "out_dir": str(out_dir), **extra}  # fmt: skip

    def in_workers(self, specs: list[dict], timeout_s: float) -> list[dict]:
        """Run specs in worker processes at once; a failed one returns its error."""
        procs = []
        for i, spec in enumerate(specs):
            spec_path = self.work / f"spec{self.units}-{i}.json"
            spec["result"] = str(spec_path.with_suffix(".result.json"))
            spec_path.write_text(json.dumps(spec))
            log = (self.work / f"worker{self.units}-{i}.log").open("w")
            cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_path)]
            procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), spec, log))
        results = []
        deadline = time.monotonic() + timeout_s
        for proc, spec, log in procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            log.close()
            result_path = Path(spec["result"])
            if proc.returncode == 0 and result_path.exists():
                results.append(json.loads(result_path.read_text()))
            else:
                tail = Path(log.name).read_text()[-1500:]
                results.append({"error": f"exit {proc.returncode}: {tail}"})
        return results

    def section(self, name: str, run: Any) -> None:
        started = time.monotonic()
        try:
            result = run()
            if result is not None:
                self.report[name] = result
        except Exception as err:  # a broken section is a finding; the others still run
            self.report["errors"].append(f"{name}: {type(err).__name__}: {err}")
        self.report.setdefault("section_seconds", {})[name] = round(time.monotonic() - started)
        self.write()

    def write(self) -> None:
        self.report["elapsed_s"] = round(time.monotonic() - self.started)
        (self.out / "gpu_check.json").write_text(json.dumps(self.report, indent=2, default=str))
        (self.out / "gpu_check.md").write_text(render(self.report))

    def data_overrides(self, which: str) -> list[str]:
        folder, val = self.folders[which]
        overrides = ["data.name=imagefolder", f"data.root={folder}", f"data.val_size={val}",
                     "data.download=false"]  # fmt: skip
        if which == "real" and self.args.data is None:  # digits: the digits preset's lr
            overrides.append(f"optim.lr={DIGITS_LR}")
        return overrides

    # -- sections

    def env(self) -> dict[str, Any]:
        cuda = self.device == "cuda"
        env = {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "code_revision": code_revision(),
            "device": torch.cuda.get_device_name() if cuda else platform.processor() or "cpu",
            "host_cpus": os.cpu_count(),
            "mode": "quick" if self.args.quick else "full",
            "budget_s": self.args.budget_s,
        }
        if cuda:
            props = torch.cuda.get_device_properties(0)
            env.update({
                "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
                "gpu_memory_gib": round(props.total_memory / 2**30, 1),
                "capability": f"{props.major}.{props.minor}",
                "conv_tf32": torch.backends.cudnn.allow_tf32,
                "matmul_tf32": torch.backends.cuda.matmul.allow_tf32,
            })  # fmt: skip
        return env

    def data(self) -> dict[str, Any]:
        s = self.sizes
        synthetic = synthetic_folder(self.work / "synthetic", s.classes, s.per_class)
        real, described = real_folder(self.work / "real", self.args.data)
        self.folders = {"synthetic": (synthetic, 2 * s.classes), "real": (real, 300)}
        return {
            "synthetic": f"{s.classes} classes x {s.per_class} images, 32x32x3 "
            f"({_warm_cache(synthetic, 2 * s.classes)} train after validation)",
            "real": f"{described} ({_warm_cache(real, 300)} train after validation)",
        }

    def syncs(self) -> dict[str, Any]:
        s = self.sizes
        spec = self.spec(
            [*self.data_overrides("real"), f"model.name={s.small_model}",
             f"optim.batch_size={s.batch}"],
            steps=s.sync_steps, epochs=2,
        )  # fmt: skip
        cfg = throughput_config(RECIPE, spec["overrides"], steps=s.sync_steps, epochs=2,
                                out_dir=spec["out_dir"])  # fmt: skip
        return sync_audit.audit(cfg)

    def correctness(self) -> dict[str, Any]:
        s = self.sizes
        base = [
            *self.data_overrides("real"),
            f"model.name={s.small_model}",
            f"optim.batch_size={s.batch}",
            "run.checkpoint=true",
            f"optim.milestones=[{s.check_epochs + 1}]",
            "mixing.p_decay_start=1",
        ]  # p constant: the curve falls while the runs last

        def run(*extra: str, **options: Any) -> dict[str, Any]:
            spec = self.spec([*base, *extra], steps=s.check_steps, epochs=s.check_epochs,
                             **options)  # fmt: skip
            return run_spec(spec) | {"out_dir": spec["out_dir"]}

        bf16 = run("run.precision=bf16")
        runs = {
            "bf16": bf16,
            "fp32": run("run.precision=fp32"),
            "bf16 repeat": run("run.precision=bf16"),
        }
        stopped = run("run.precision=bf16", stop_after=s.resume_at)
        resumed = run_spec({**self.spec([*base, "run.precision=bf16"], steps=s.check_steps,
                                        epochs=s.check_epochs),
                            "out_dir": stopped["out_dir"], "resume": True})  # fmt: skip
        runs["bf16 stopped, resumed"] = {
            "train_loss": stopped["train_loss"] + resumed["train_loss"],
            "final": resumed["final"],
        }
        reference = bf16["train_loss"]
        noise = _gap(runs["bf16 repeat"]["train_loss"], reference)  # run-to-run, same config
        tol = {"fp32": max(PRECISION_TOL, 2 * noise), "bf16 repeat": None,
               "bf16 stopped, resumed": max(RESUME_TOL[self.device], 2 * noise)}  # fmt: skip
        rows = []
        for name, result in runs.items():
            gap = _gap(result["train_loss"], reference) if name != "bf16" else 0.0
            rows.append({
                "run": name, "train_loss": [round(v, 4) for v in result["train_loss"]],
                "val_acc": round(result["final"]["val/acc"], 4), "gap_vs_bf16": gap,
                "tolerance": tol.get(name), "ok": tol.get(name) is None or gap <= tol[name],
            })  # fmt: skip
        prefix_equal = stopped["train_loss"] == reference[: s.resume_at]
        trains = statistics.mean(reference[-2:]) < reference[0]
        return {
            "model": s.small_model,
            "steps": f"{s.check_epochs} epochs x {s.check_steps} steps, stopped after epoch "
            f"{s.resume_at} and resumed from its checkpoint",
            "trains": trains,
            "resume_prefix_identical": prefix_equal,
            "repeat_noise": noise,
            "tolerances": "largest relative gap of the epoch-mean train loss to the bf16 run: "
            f"fp32 <= max({PRECISION_TOL}, 2 x repeat noise), resumed <= "
            f"max({RESUME_TOL[self.device]}, 2 x repeat noise)",
            "runs": rows,
            "ok": all(r["ok"] for r in rows) and prefix_equal,  # learning: see accuracy
            "note": "on the CPU bf16 is fp32 (autocast is CUDA-only, inference.autocast)"
            if self.device == "cpu"
            else "fp32 convolutions use TF32 (PyTorch's cuDNN default)",
        }

    def throughput_spec(self, members: int, slots: int, mode: str, **extra: Any) -> dict:
        s = self.sizes
        overrides = [*self.data_overrides("synthetic"), f"model.name={s.big_model}",
                     f"model.n_members={members}", f"optim.batch_size={slots}",
                     "run.precision=bf16", "run.eval_batch_size=500"]  # fmt: skip
        if mode != "eager":
            overrides += ["run.compile=true", f"run.compile_mode={mode}"]
        return self.spec(overrides, steps=s.steps, epochs=1 + s.measured, **extra)

    def throughput(self, grid: list[tuple[int, int, str]], *, in_workers: bool) -> None:
        for members, slots, mode in grid:
            estimate = 30 if mode == "eager" else 150
            label = f"M={members}, {slots} slots, {mode}"
            if not self.fits(f"throughput {label}", estimate):
                continue
            spec = self.throughput_spec(members, slots, mode)
            if in_workers:
                result = self.in_workers([spec], timeout_s=max(30, self.left_s()))[0]
            else:
                result = run_spec(spec)
            self.report.setdefault("throughput", []).append(
                self.throughput_row(members, slots, mode, result)
            )
            self.write()

    def throughput_row(self, members: int, slots: int, mode: str, result: dict) -> dict:
        row: dict[str, Any] = {"model": self.sizes.big_model, "M": members, "slots": slots,
                               "mode": mode}  # fmt: skip
        if "error" in result:
            return row | {"error": result["error"]}
        steady = result["slots_per_s"][1:]
        rate = statistics.median(steady)
        return row | {
            "slots_per_s": round(rate, 1), "images_per_s": round(rate * members, 1),
            "ms_per_step": round(1000 * slots / rate, 2),
            "slots_per_s_all": [round(r, 1) for r in steady],
            "peak_train_gib": result.get("peak_cuda_train_gib"),
            "first_epoch_s": round(self.sizes.steps * slots / result["slots_per_s"][0], 1),
            "train_loss": [round(v, 4) for v in result["train_loss"]],
            "n": f"{len(steady)} epochs x {self.sizes.steps} steps after 1 warm-up epoch",
            **({"compile": result["compile"]} if "compile" in result else {}),
        }  # fmt: skip

    def compiled_matches_eager(self) -> dict[str, Any]:
        rows = self.report.get("throughput", [])
        first = self.sizes.slots[0]
        eager = next((r for r in rows if (r["M"], r["slots"], r["mode"]) == (2, first, "eager")
                      and "train_loss" in r), None)  # fmt: skip
        compiled = next((r for r in rows if (r["M"], r["slots"], r["mode"]) == (2, first,
                         "default") and "train_loss" in r), None)  # fmt: skip
        if eager is None or compiled is None:
            return {"ok": None, "note": "eager or compiled run missing"}
        gap = _gap(compiled["train_loss"], eager["train_loss"])
        return {"gap": gap, "tolerance": COMPILE_TOL, "ok": gap <= COMPILE_TOL,
                "eager": eager["train_loss"], "compiled": compiled["train_loss"]}  # fmt: skip

    def packing(self) -> list[dict]:
        rows = []
        first = self.sizes.slots[0]
        for parties in self.sizes.packing:
            if not self.fits(f"packing {parties}", 25 + 15 * parties):
                continue
            barrier = self.work / f"barrier{parties}"
            barrier.mkdir()
            share = None if parties == 1 else 1 / parties
            specs = [self.throughput_spec(2, first, "eager", barrier=str(barrier),
                                          parties=parties, memory_share=share)
                     for _ in range(parties)]  # fmt: skip
            if self.device == "cuda":
                torch.cuda.empty_cache()  # this process's cached blocks: theirs to use
            results = self.in_workers(specs, timeout_s=max(30, self.left_s()))
            rates = [statistics.median(r["slots_per_s"][1:]) for r in results if "error" not in r]
            rows.append({
                "trials": parties, "per_trial_slots_per_s": [round(r, 1) for r in rates],
                "total_slots_per_s": round(sum(rates), 1) if len(rates) == parties else None,
                "errors": [r["error"] for r in results if "error" in r],
                "memory_share": share,
                "peak_train_gib": [r.get("peak_cuda_train_gib") for r in results],
            })  # fmt: skip
            alone = rows[0]["total_slots_per_s"]
            if alone and rows[-1]["total_slots_per_s"]:
                rows[-1]["vs_one_trial"] = round(rows[-1]["total_slots_per_s"] / alone, 2)
            self.report["packing"] = rows
            self.write()
        return rows

    def accuracy(self) -> dict[str, Any]:
        s = self.sizes
        real_cifar = self.args.data is not None
        model = s.big_model if real_cifar else s.small_model
        epochs = self.args.data_epochs if real_cifar else s.accuracy_epochs
        steps = 0 if real_cifar else s.accuracy_steps
        batch = 64 if real_cifar else s.batch
        spec = self.spec([*self.data_overrides("real"), f"model.name={model}",
                          f"optim.batch_size={batch}", "run.eval_every=1",
                          f"optim.milestones=[{epochs + 1}]"],
                         steps=steps, epochs=epochs)  # fmt: skip
        started = time.monotonic()
        val_acc: list[float] = []
        cfg = throughput_config(RECIPE, spec["overrides"], steps=steps, epochs=epochs,
                                out_dir=spec["out_dir"])  # fmt: skip
        final = train(cfg, on_epoch=lambda r: val_acc.append(round(r.metrics["val/acc"], 4)))
        per_epoch = len(load_dataset(cfg.data).train) // cfg.unique_per_step
        steps = min(per_epoch, steps or per_epoch) * epochs
        return {
            "data": self.report["data"]["real"], "model": model, "epochs": epochs,
            "steps": steps, "val_acc_by_epoch": val_acc,
            "final_val_acc": round(final["val/acc"], 4),
            "final_test_acc": round(final["test/acc"], 4),
            "chance": round(1 / len(list((self.folders["real"][0] / "train").iterdir())), 3),
            "seconds": round(time.monotonic() - started, 1),
        }  # fmt: skip

    def projection(self) -> dict[str, Any]:
        unique = 64 // 4
        steps = CIFAR100_TRAIN // unique * RECIPE_EPOCHS
        rows = {}
        for r in self.report.get("throughput", []):
            if (r["M"], r["slots"]) == (2, self.sizes.slots[0]) and "slots_per_s" in r:
                train_h = steps * 64 / r["slots_per_s"] / 3600
                # validation: 5000 images a epoch at test time, one forward pass each (about a
                # third of a training slot's forward + backward): an estimate, not measured
                val_h = RECIPE_EPOCHS * 5000 / (3 * r["slots_per_s"]) / 3600
                rows[r["mode"]] = {
                    "slots_per_s": r["slots_per_s"],
                    "train_gpu_hours": round(train_h, 2),
                    "with_validation_gpu_hours": round(train_h + val_h, 2),
                }
        return {
            "recipe": f"CIFAR-100, {CIFAR100_TRAIN} train images, b=4, 64 slots "
            f"({unique} unique images a step), {RECIPE_EPOCHS} epochs = {steps} steps",
            "by_mode": rows,
            "measured_model": self.sizes.big_model,
        }

    def run(self) -> None:
        s = self.sizes
        self.section("env", self.env)
        self.section("data", self.data)
        if "data" not in self.report:
            return
        if self.fits("syncs", 30):
            self.section("syncs", self.syncs)
        if self.fits("correctness", 60):
            self.section("correctness", self.correctness)
        eager = [(2, slots, "eager") for slots in s.slots] + [(3, s.slots[0], "eager")]
        self.section("throughput_eager", lambda: self.throughput(eager, in_workers=False))
        if self.fits("accuracy", 90 if self.args.data else 40):
            self.section("accuracy", self.accuracy)
        compiled = [(2, s.slots[0], "default")] if self.args.compile else []
        self.section("throughput_compiled", lambda: self.throughput(compiled, in_workers=True))
        self.section("compiled_vs_eager", self.compiled_matches_eager)
        self.section("packing", self.packing)
        more = [(2, s.slots[0], "reduce-overhead"), (2, s.slots[-1], "default"),
                (3, s.slots[0], "default"), (2, s.slots[1], "default")]  # fmt: skip
        more = list(dict.fromkeys(more)) if self.args.compile else []
        self.section("throughput_more", lambda: self.throughput(more, in_workers=True))
        self.section("projection", self.projection)


def failures(report: dict[str, Any]) -> list[str]:
    """What the check found wrong (an empty list: everything it ran passed)."""
    found = [f"error in {e}" for e in report.get("errors", [])]
    syncs = report.get("syncs")
    if syncs and syncs["device_syncs_per_step"] > 1 / DIVERGENCE_CHECK_STEPS + 1e-9:
        found.append(
            f"syncs: {syncs['device_syncs_per_step']} device syncs a step, more than the "
            f"divergence check's 1/{DIVERGENCE_CHECK_STEPS}"
        )
    if report.get("correctness", {}).get("ok") is False:
        found.append("correctness: a run is outside its tolerance (see the table)")
    accuracy = report.get("accuracy")
    if (
        accuracy
        and report["env"]["mode"] == "full"
        and accuracy["final_val_acc"] < 2 * accuracy["chance"]
    ):
        found.append(f"accuracy: val acc {accuracy['final_val_acc']} is not 2x chance")
    if report.get("compiled_vs_eager", {}).get("ok") is False:
        found.append("compiled vs eager: loss curves differ beyond the tolerance")
    found += [f"{r['model']} M={r['M']} {r['slots']} slots {r['mode']}: {r['error'][:200]}"
              for r in report.get("throughput", []) if "error" in r]  # fmt: skip
    return found


def _gap(values: list[float], reference: list[float]) -> float:
    """Largest relative gap between two loss curves (epoch means)."""
    if len(values) != len(reference):
        return float("inf")
    return round(
        max(abs(v - r) / max(abs(r), 1e-12) for v, r in zip(values, reference, strict=True)), 6
    )


# ---- the Markdown report ------------------------------------------------------------------


def _table(rows: list[dict], columns: list[str]) -> list[str]:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [row.get(c, "") for c in columns]
        lines.append("| " + " | ".join("" if c is None else str(c) for c in cells) + " |")
    return lines


def render(report: dict[str, Any]) -> str:
    env = report.get("env", {})
    out = [f"# GPU check: {env.get('device', '?')}, {env.get('date', '?')}", ""]
    out.append(", ".join(f"{k} {v}" for k, v in env.items() if k not in ("device", "date")))
    out.append(f"elapsed {report.get('elapsed_s')} s")
    if "data" in report:
        out += ["", "Data: " + "; ".join(f"{k}: {v}" for k, v in report["data"].items())]
    if "syncs" in report:
        syncs = report["syncs"]
        out += ["", "## Host syncs in the training step", "",
                f"{syncs['epochs']} epochs x {syncs['steps_per_epoch']} steps; device syncs "
                f"per step: **{syncs['device_syncs_per_step']}** (by design: the divergence "
                "check, 1 in 20 steps; the progress bar's loss, 1 in 25, is off in trials). "
                "`_local_scalar_dense` calls in the whole run: "
                f"{syncs['recorded_local_scalar_dense']} recorded, "
                f"{syncs['profiler_local_scalar_dense']} counted by the torch profiler (which "
                "sees each op twice under the recorder)", ""]  # fmt: skip
        step_rows = [r for r in syncs["records"] if r["in_step"]]
        out += _table(step_rows, ["where", "op", "device", "count", "every_steps",
                                  "device_sync", "code"])  # fmt: skip
        if syncs.get("cuda_sync_warnings"):
            out += ["", f"CUDA sync debug mode: {syncs['cuda_sync_warnings']}"]
    if "correctness" in report:
        c = report["correctness"]
        out += ["", f"## Correctness ({c['model']}, {c['steps']})", "",
                f"trains: {c['trains']}; resumed run's first epochs identical: "
                f"{c['resume_prefix_identical']}; **all within tolerance: {c['ok']}**; "
                f"{c['note']}. Tolerances: {c['tolerances']}; repeat noise "
                f"{c['repeat_noise']}.", ""]  # fmt: skip
        out += _table(c["runs"], ["run", "gap_vs_bf16", "tolerance", "ok", "val_acc",
                                  "train_loss"])  # fmt: skip
    if report.get("throughput"):
        out += ["", "## Throughput and peak memory (bf16, channels_last)", ""]
        out += _table(report["throughput"], ["model", "M", "slots", "mode", "slots_per_s",
                                             "images_per_s", "ms_per_step", "peak_train_gib",
                                             "first_epoch_s", "n", "error"])  # fmt: skip
    if report.get("compiled_vs_eager"):
        out += ["", f"Compiled vs eager loss curves: {report['compiled_vs_eager']}"]
    if report.get("packing"):
        out += ["", "## Trials packed on one device (separate processes)", ""]
        out += _table(
            report["packing"],
            [
                "trials",
                "per_trial_slots_per_s",
                "total_slots_per_s",
                "vs_one_trial",
                "memory_share",
                "peak_train_gib",
                "errors",
            ],
        )
    if "accuracy" in report:
        a = report["accuracy"]
        out += ["", "## Accuracy on real data", "",
                f"{a['data']}; {a['model']}, {a['epochs']} epochs ({a['steps']} steps, "
                f"{a['seconds']} s): val acc by epoch {a['val_acc_by_epoch']}; final (best "
                f"val epoch) val {a['final_val_acc']}, test {a['final_test_acc']}; chance "
                f"{a['chance']}"]  # fmt: skip
    if "projection" in report:
        p = report["projection"]
        out += ["", "## Projected GPU-hours of the full recipe", "", p["recipe"], ""]
        out += _table(
            [{"mode": k, **v} for k, v in p["by_mode"].items()],
            ["mode", "slots_per_s", "train_gpu_hours", "with_validation_gpu_hours"],
        )
    for key, title in (("failures", "Failures"), ("skipped", "Skipped"), ("errors", "Errors")):
        if report.get(key):
            out += ["", f"## {title}", "", *[f"- {item}" for item in report[key]]]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (the CPU-side check)")
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="folder for the report")
    parser.add_argument("--data", type=Path, help=".npz of uint8 images + labels (see above)")
    parser.add_argument("--data-epochs", type=int, default=3, help="epochs on --data")
    parser.add_argument("--budget-s", type=float, default=420, help="skip what would overrun")
    parser.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compiled runs (default: on CUDA; minutes of inductor on a CPU)",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # one spec, in its own process
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker)
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda but no CUDA device is visible; use --device cpu --quick")
    if args.compile is None:
        args.compile = args.device == "cuda"
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as work:
        check = Check(args, Path(work))
        check.run()
    check.report["failures"] = failures(check.report)
    check.write()
    print((check.out / "gpu_check.md").read_text())
    print(f"report: {check.out / 'gpu_check.json'} and gpu_check.md")
    if check.report["failures"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
