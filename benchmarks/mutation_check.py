"""Named mutations of the method: does every plausible bug fail a test?

    python benchmarks/mutation_check.py                 # every mutation (~40 min on 2 cores)
    python benchmarks/mutation_check.py --list          # names, files and the tests each runs
    python benchmarks/mutation_check.py --only cut-region-from-member-1 --only ...
    python benchmarks/mutation_check.py --json mutation.json

Each mutation is one plausible bug in the method's modules (mixing, step, data, metrics,
models, train's schedule and selection, ensembles, pareto, preflight, config rules): a
snippet of a file and what it becomes. The package and the tests are copied to a temporary
folder once; the unmutated copy must pass every selected mutation's tests (the baseline);
then each mutation is written into the copy, its tests run there with pytest (`-x`), and the
file is restored. Never the working tree. A mutation is *killed* when a test fails and
*survived* when they all pass. A mutation marked `equivalent` changes no behaviour a test
could see, and says why; it is expected to survive. Exit 0 when every other mutation is
killed and every equivalent one survives, 1 otherwise.

Not part of CI (tests/benchmarks/test_mutation_check.py runs one mutation to prove the
script works); its last result is in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COPIED = ("mixmo_search", "tests", "app", "search_spaces", "docs", "pyproject.toml")
TIMEOUT_S = 900  # one mutation's tests; a mutation that hangs them counts as killed


@dataclass(frozen=True)
class Mutation:
    name: str
    file: str  # under the repository root
    original: str  # occurs exactly once in `file`
    mutated: str
    tests: tuple[str, ...]  # pytest arguments: files or node ids
    equivalent: str = ""  # why no test can see it: it changes no behaviour


# ---- the tests each family runs (the module's own tests, the cheap ones first) ----

T = "tests/test_train.py::"
MIXING = ("tests/test_mixing.py",)
STEP = (
    "tests/test_step.py",
    "--deselect", "tests/test_step.py::test_the_logged_p_drives_the_binary_block",
    "--deselect", "tests/test_step.py::test_half_the_batches_are_binary_at_p_one_half",
)  # fmt: skip
DATA = ("tests/test_data.py", *STEP)
METRICS = ("tests/test_metrics.py", "tests/test_ensembles.py")
MODELS = ("tests/models", *STEP)
SCHEDULE = (
    T + "test_lr_follows_unique_images_warmup_and_milestones",
    "tests/test_mixing.py::test_p_schedule",
    "tests/test_step.py::test_the_logged_p_drives_the_binary_block",
)
SELECTION = (
    T + "test_the_final_metrics_are_the_kept_checkpoints_on_val_then_test",
    T + "test_the_kept_epoch_is_the_best_on_validation_when_test_prefers_another",
)
DIVERGENCE = (
    T + "test_nan_alone_inf_alone_and_the_bound_each_stop_the_run",
    T + "test_a_loss_just_below_the_bound_is_no_divergence",
    T + "test_a_diverging_loss_stops_the_run_at_once_and_keeps_nothing",
)
OPTIMIZER = (
    T + "test_the_optimiser_is_the_recipe_exactly",
    T + "test_sgd_weight_decay_is_the_gradient_of_the_recipes_l2_term",
)
ENSEMBLES = ("tests/test_ensembles.py",)
PARETO = ("tests/test_pareto.py",)
PREFLIGHT = (T + "test_cli_failures_are_one_line_and_non_zero", "tests/test_config.py")
CONFIG = ("tests/test_config.py", T + "test_lr_follows_unique_images_warmup_and_milestones")

MIX, STP, DAT, MET = (f"mixmo_search/{m}.py" for m in ("mixing", "step", "data", "metrics"))
MOD, WRN, PRE = (f"mixmo_search/models/{m}.py" for m in ("mixmo", "wrn", "preact_resnet"))
INIT, TRN = "mixmo_search/models/weight_init.py", "mixmo_search/train.py"
ENS, PAR, PRF, CFG = (
    f"mixmo_search/{m}.py" for m in ("ensembles", "pareto", "preflight", "config")
)

M = Mutation
MUTATIONS: tuple[Mutation, ...] = (
    # -- mixing: kappa, masks, the p schedule, loss weights, input mixing --
    M("dirichlet-only-for-two-members", MIX,
      "torch.full((batch, n_members), float(alpha), device=device)",
      "torch.tensor([float(alpha)] * 2 + [1.0] * (n_members - 2), device=device)"
      ".expand(batch, n_members)", MIXING),
    M("alpha-zero-gives-one-half", MIX,
      "torch.full((n_members, batch), 1.0 / n_members, device=device)",
      "torch.full((n_members, batch), 0.5, device=device)", MIXING),
    M("box-side-from-kappa-not-its-root", MIX,
      "half_w = (torch.floor(w * root) // 2)", "half_w = (torch.floor(w * kappa) // 2)", MIXING),
    M("box-one-pixel-too-tall", MIX,
      "(rows < (cy + half_h).clamp(max=h))", "(rows <= (cy + half_h).clamp(max=h))", MIXING),
    M("box-lower-clamp-dropped", MIX,
      "(rows >= (cy - half_h).clamp(min=0))", "(rows >= (cy - half_h))", MIXING,
      equivalent="rows are never negative, so `rows >= cy - half_h` clips by itself"),
    M("box-centre-shared-by-the-batch", MIX,
      "cx = torch.randint(0, w, (n, 1, 1), device=device)",
      "cx = torch.randint(0, w, (1, 1, 1), device=device)", MIXING),
    M("binary-when-draw-above-p", MIX,
      "generator=host_gen).item() < p", "generator=host_gen).item() > p", MIXING),
    M("cut-region-from-member-1", MIX,
      "_BINARY[block](kappa[0], h, w)", "_BINARY[block](kappa[1], h, w)", MIXING),
    M("rest-shared-equally", MIX,
      "rest = kappa[1:] / kappa[1:].sum(0, keepdim=True).clamp(min=1e-12)",
      "rest = torch.full_like(kappa[1:], 1.0 / (n_members - 1))", MIXING),
    M("rest-normalised-by-all-members", MIX,
      "rest = kappa[1:] / kappa[1:].sum(0, keepdim=True).clamp(min=1e-12)",
      "rest = kappa[1:] / kappa.sum(0, keepdim=True).clamp(min=1e-12)", MIXING),
    M("region-holder-always-member-0", MIX,
      "roles = torch.randperm(n_members, generator=host_gen).tolist()",
      "roles = list(range(n_members))", MIXING),
    M("kappa-not-recomputed-after-binary-masks", MIX,
      "return Mix(masks=masks, kappa=masks.mean(dim=(2, 3, 4)), binary=True)",
      "return Mix(masks=masks, kappa=kappa, binary=True)", MIXING),
    M("linear-masks-of-the-wrong-members", MIX,
      "masks = kappa[:, :, None, None, None].expand(",
      "masks = kappa.flip(0)[:, :, None, None, None].expand(", MIXING),
    M("p-decay-divides-by-decay-start", MIX,
      "min(1.0, max(0.0, (1 - progress) / (1 - decay_start)))",
      "min(1.0, max(0.0, (1 - progress) / decay_start))", SCHEDULE),
    M("p-decay-off-by-one-epoch", MIX,
      "progress = epoch / (epochs - 1)", "progress = epoch / epochs", SCHEDULE),
    M("reweighting-root-inverted", MIX,
      "log_share = kappa.clamp(min=0).log() / r", "log_share = kappa.clamp(min=0).log() * r",
      MIXING),
    M("reweighting-m-factor-hard-coded-to-2", MIX,
      "return n_members * torch.softmax(log_share, dim=0)",
      "return 2 * torch.softmax(log_share, dim=0)", MIXING),
    M("reweighting-normalised-over-the-batch", MIX,
      "return n_members * torch.softmax(log_share, dim=0)",
      "return n_members * torch.softmax(log_share, dim=1)", MIXING),
    M("input-mix-decided-once-for-all-members", MIX,
      "use = torch.rand(n_members, batch, device=device) < prob",
      "use = (torch.rand(1, batch, device=device) < prob).expand(n_members, batch)", MIXING),
    M("input-mix-label-not-flipped", MIX,
      "lam = torch.where(flip, 1 - visible, visible)", "lam = visible", MIXING),
    M("input-mix-sources-swapped", MIX,
      "mixed = own * images + (1 - own) * partners", "mixed = own * partners + (1 - own) * images",
      MIXING + STEP),
    # -- the training step --
    M("every-head-gets-member-0s-labels", STP,
      "return Batch(images, train.labels[idx], mix)",
      "return Batch(images, train.labels[idx[0]].expand_as(idx), mix)", STEP),
    M("partner-labels-of-the-next-member", STP,
      "train.labels[partner_idx], own_share)", "train.labels[partner_idx.roll(1, 0)], own_share)",
      STEP),
    M("soft-target-weights-swapped", STP,
      "ce = batch.own_share * ce + (1 - batch.own_share) * partner_ce.view_as(labels)",
      "ce = (1 - batch.own_share) * ce + batch.own_share * partner_ce.view_as(labels)", STEP),
    M("loss-mean-over-members-not-sum", STP,
      "return (loss_weights(batch.mix.kappa, reweight_r) * ce).sum(0).mean()",
      "return (loss_weights(batch.mix.kappa, reweight_r) * ce).mean(0).mean()", STEP),
    M("loss-weights-from-the-drawn-not-the-real-kappa", STP,
      "loss_weights(batch.mix.kappa, reweight_r)",
      "loss_weights(batch.mix.masks.amax(dim=(2, 3, 4)), reweight_r)", STEP),
    # -- data: batches, reshuffles, repetition, augmentation --
    M("epoch-steps-count-slots-not-unique-images", DAT,
      "steps = n_images // unique", "steps = n_images // batch_size", DATA),
    M("repeats-adjacent-instead-of-interleaved", DAT,
      ".repeat_interleave(batch_repeat, dim=1)", ".repeat(1, batch_repeat)", DATA,
      equivalent="member 0's slots are permuted right after, so the order of the repeats "
      "within a batch is lost either way"),
    M("members-share-one-reshuffle", DAT,
      "    others = [\n        member0.gather(1, _row_permutations(steps, batch_size, device))\n",
      "    shared = _row_permutations(steps, batch_size, device)\n"
      "    others = [\n        member0.gather(1, shared)\n", DATA),
    M("input-repetition-drawn-per-member", DAT,
      "others = [torch.where(same, member0, shuffled) for shuffled in others]",
      "others = [torch.where(torch.rand_like(same, dtype=torch.float) < input_repeat, member0,"
      " shuffled) for shuffled in others]", DATA),
    M("input-repetition-inverted", DAT,
      "same = torch.rand(steps, batch_size, device=device) < input_repeat",
      "same = torch.rand(steps, batch_size, device=device) > input_repeat", DATA),
    M("flip-drawn-once-a-batch", DAT,
      "mirrored = torch.rand(n, 1, device=device) < 0.5",
      "mirrored = torch.rand(1, 1, device=device) < 0.5", DATA),
    M("crop-offsets-one-short", DAT,
      "top = torch.randint(0, 2 * padding + 1, (n, 1), device=device)",
      "top = torch.randint(0, 2 * padding, (n, 1), device=device)", DATA),
    M("crop-shared-by-the-batch", DAT,
      "left = torch.randint(0, 2 * padding + 1, (n, 1), device=device)",
      "left = torch.randint(0, 2 * padding + 1, (1, 1), device=device)", DATA),
    M("normalisation-shift-sign", DAT,
      "self.shift = -torch.tensor(mean", "self.shift = torch.tensor(mean", DATA),
    # -- models --
    M("mixed-features-lose-the-m-factor", MOD, "return self.n_members * z", "return z", MODELS),
    M("inference-uses-member-0s-encoder-only", MOD,
      "weight = sum(conv.weight for conv in self.encoders)",
      "weight = first.weight * len(self.encoders)", MODELS),
    M("heads-interleaved", MOD,
      "logits = self.head(features).unflatten(1, (self.n_members, self.num_classes))",
      "logits = self.head(features).unflatten(1, (self.num_classes, self.n_members))"
      ".transpose(1, 2)", MODELS),
    M("wrn-stride-padding-on-top-left", WRN,
      "out = F.pad(out, (0, 1, 0, 1))", "out = F.pad(out, (1, 0, 1, 0))", MODELS),
    M("wrn-shortcut-reads-the-preactivated-input", WRN,
      "return out + (x if self.shortcut is None else self.shortcut(x))",
      "return out + (x if self.shortcut is None else self.shortcut(F.relu(self.bn1(x))))",
      MODELS),
    M("wrn-no-final-bn-relu", WRN,
      "        nn.BatchNorm2d(in_channels),  # the blocks end on a sum: pre-activate the "
      "features\n        nn.ReLU(inplace=True),\n", "", MODELS),
    M("preact-shortcut-reads-the-raw-input", PRE,
      "skip = x if self.shortcut is None else self.shortcut(pre)",
      "skip = x if self.shortcut is None else self.shortcut(x)", MODELS),
    M("preact-stride-on-the-second-conv", PRE,
      "self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)",
      "self.conv1 = nn.Conv2d(in_channels, out_channels, 3, 1, padding=1, bias=False)", MODELS),
    M("init-truncation-not-compensated", INIT,
      "spread = he_std(weight) / TRUNCATED_STD", "spread = he_std(weight)", MODELS),
    M("init-fan-out-not-fan-in", INIT,
      "fan_in = weight[0].numel()", "fan_in = weight[:, 0].numel()", MODELS),
    # -- metrics --
    M("ece-bins-left-closed", MET,
      "torch.bucketize(confidence, inner_edges[1:-1])",
      "torch.bucketize(confidence, inner_edges[1:-1], right=True)", METRICS),
    M("ece-divided-by-bins", MET, "gap_sums.abs().sum() / probs.shape[0]",
      "gap_sums.abs().sum() / n_bins", METRICS),
    M("brier-mean-over-classes", MET, "(probs - one_hot).pow(2).sum(dim=1).mean()",
      "(probs - one_hot).pow(2).mean()", METRICS),
    M("temperature-search-goes-the-wrong-way", MET,
      "minimum_is_left = nll_at(left) <= nll_at(right)",
      "minimum_is_left = nll_at(left) >= nll_at(right)", METRICS),
    M("temperature-search-stops-early", MET, "_GOLDEN_STEPS = 48", "_GOLDEN_STEPS = 12", METRICS),
    M("scaled-ece-without-the-temperature", MET,
      '"ece_ts": ece(scaled_logits.softmax(dim=1), labels)', '"ece_ts": ece(probs, labels)',
      METRICS),
    M("scaled-nll-without-the-temperature", MET, '"nll_ts": nll(scaled_logits, labels)',
      '"nll_ts": nll(logits, labels)', METRICS),
    M("ensemble-averages-probabilities", MET, "return member_logits.double().mean(dim=0)",
      "return member_logits.double().softmax(dim=2).mean(dim=0).log()", METRICS),
    M("ratio-error-inverted", MET, "(single / both.clamp(min=1.0)).mean()",
      "(both / single.clamp(min=1.0)).mean()", METRICS),
    M("disagreement-against-the-labels", MET,
      "(member_preds[first] != member_preds[second]).double().mean()",
      "(member_preds[first] != member_preds[first]).double().mean()", METRICS),
    # -- train: schedule, selection, divergence, optimiser --
    M("warmup-off-by-one-step", TRN, "done = epoch * steps_per_epoch + step + 1",
      "done = epoch * steps_per_epoch + step", SCHEDULE),
    M("milestones-one-epoch-early", TRN, "decays = sum(epoch + 1 >= milestone",
      "decays = sum(epoch >= milestone", SCHEDULE),
    M("weight-decay-doubled", TRN, "weight_decay=2 * cfg.optim.l2 + cfg.optim.weight_decay",
      "weight_decay=4 * cfg.optim.l2 + cfg.optim.weight_decay", OPTIMIZER),
    M("sgd-weight-decay-dropped", TRN, "weight_decay=2 * cfg.optim.l2 + cfg.optim.weight_decay",
      "weight_decay=2 * cfg.optim.l2", OPTIMIZER),
    M("nesterov-ignored", TRN, "nesterov=cfg.optim.nesterov,", "nesterov=False,", OPTIMIZER),
    M("selection-on-test", TRN,
      "ds.val.images,\n                normalize,\n                cfg.run.eval_batch_size,\n"
      "                precision=cfg.run.precision,\n            )\n"
      "            metrics.update(evaluate(val_logits, ds.val.labels,",
      "ds.test.images,\n                normalize,\n                cfg.run.eval_batch_size,\n"
      "                precision=cfg.run.precision,\n            )\n"
      "            metrics.update(evaluate(val_logits, ds.test.labels,", SELECTION),
    M("best-epoch-recorded-0-based", TRN,
      'best_acc, best_epoch = metrics["val/acc"], epoch + 1',
      'best_acc, best_epoch = metrics["val/acc"], epoch', SELECTION),
    M("final-metrics-from-the-last-epoch", TRN,
      "checkpoint.load(out_dir / checkpoint.BEST, ds.train.images.device)",
      "checkpoint.load(out_dir / checkpoint.LAST, ds.train.images.device)", SELECTION),
    M("test-fits-its-own-temperature", TRN,
      'temperature = final.get("val/temperature", 1.0) if split == "test" else None',
      "temperature = None", SELECTION),
    M("divergence-misses-nan", TRN,
      "~(torch.isfinite(loss) & (loss < DIVERGED_LOSS))", "(loss > DIVERGED_LOSS)", DIVERGENCE),
    M("divergence-misses-the-bound", TRN,
      "~(torch.isfinite(loss) & (loss < DIVERGED_LOSS))", "~torch.isfinite(loss)", DIVERGENCE),
    M("divergence-bound-ten-times-higher", TRN, "DIVERGED_LOSS = 1e4", "DIVERGED_LOSS = 1e5",
      DIVERGENCE),
    M("divergence-reports-the-last-bad-step", TRN,
      "bad_step = torch.where(first_bad, step, bad_step)",
      "bad_step = torch.where(first_bad | (bad_step >= 0), step, bad_step)", DIVERGENCE),
    M("divergence-not-checked-at-epoch-end", TRN,
      "        if bad_step >= 0:  # before anything of this epoch is evaluated or saved\n"
      "            _diverged(", "        if False:\n            _diverged(", DIVERGENCE),
    # -- ensembles and Pareto fronts --
    M("ensemble-test-refits-temperature", ENS,
      'test, prefix="test", temperature=val_metrics["val/temperature"]',
      'test, prefix="test", temperature=None', ENSEMBLES),
    M("greedy-picks-the-worst", ENS, "best = min(range(len(val)), key=lambda t: (sign *",
      "best = max(range(len(val)), key=lambda t: (sign *", ENSEMBLES),
    M("ensemble-speed-adds-up", ENS,
      '"cost/images_per_s": 1.0 / sum(1.0 / c["cost/images_per_s"] for c in costs)',
      '"cost/images_per_s": sum(c["cost/images_per_s"] for c in costs)', ENSEMBLES),
    M("trial-vote-is-its-first-head", ENS, "member_logits=preds.ensemble_logits[None],",
      "member_logits=preds.member_logits[:1],", ENSEMBLES),
    M("pareto-dominated-by-the-wrong-axis", PAR, "return ~(at_least & better).any(0)",
      "return ~(at_least & better).any(1)", PARETO),
    M("pareto-min-and-max-swapped", PAR, 'sign = np.array([1.0 if mode == "max" else -1.0',
      'sign = np.array([1.0 if mode == "min" else -1.0', PARETO),
    M("knee-farthest-from-utopia", PAR, "distance = np.linalg.norm(1.0 - scaled, axis=1)",
      "distance = -np.linalg.norm(1.0 - scaled, axis=1)", PARETO),
    M("pareto-keeps-nan-rows", PAR,
      "isinstance(v, numbers.Real) and not isinstance(v, bool) and not math.isnan(v)",
      "isinstance(v, numbers.Real) and not isinstance(v, bool)", PARETO),
    # -- preflight and config rules --
    M("preflight-counts-val-as-training", PRF, "n_train = shape.n_train - shape.n_val",
      "n_train = shape.n_train", PREFLIGHT),
    M("preflight-lets-padding-exceed-the-image", PRF,
      "if data.crop_padding > shape.image_size:", "if data.crop_padding > 2 * shape.image_size:",
      PREFLIGHT),
    M("preflight-skips-the-stride-check", PRF,
      "if encoded != (mask_side, mask_side):", "if False:", PREFLIGHT),
    M("batch-rule-inverted", CFG, "if o.batch_size % o.batch_repeat:",
      "if o.batch_repeat % o.batch_size:", CONFIG),
    M("milestones-may-decrease", CFG, "if milestones != sorted(milestones):", "if False:", CONFIG),
    M("nesterov-rule-dropped", CFG, "if cfg.optim.nesterov and cfg.optim.momentum == 0:",
      "if cfg.optim.nesterov and cfg.optim.momentum < 0:", CONFIG),
    M("lr-per-slot-not-per-unique-image", CFG,
      "return self.optim.lr * self.unique_per_step / 128",
      "return self.optim.lr * self.optim.batch_size / 128", CONFIG),
)  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    name: str
    file: str
    result: str  # killed, survived, equivalent (survived as declared), or a problem
    seconds: float
    detail: str  # the first failing test, or why it is equivalent

    @property
    def as_expected(self) -> bool:
        return self.result in ("killed", "equivalent")


def check_snippets(mutations: Iterable[Mutation], root: Path = ROOT) -> list[str]:
    """What is wrong with the list against the sources in `root`: each snippet must occur
    exactly once in its file, and names must be unique."""
    problems, seen = [], set()
    for m in mutations:
        if m.name in seen:
            problems.append(f"{m.name}: named twice")
        seen.add(m.name)
        count = (root / m.file).read_text().count(m.original)
        if count != 1:
            problems.append(f"{m.name}: its snippet occurs {count} times in {m.file}")
        if m.original == m.mutated:
            problems.append(f"{m.name}: changes nothing")
    return problems


def copy_repository(into: Path) -> Path:
    """The package, tests and what they read, copied under `into`."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "artifacts", ".mixmo_cache")
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, into / name, ignore=ignore)
        elif source.exists():
            shutil.copy2(source, into / name)
    return into


def _env(copy: Path) -> dict[str, str]:
    # the copy first on the path (it shadows an installed or editable mixmo_search), and no
    # bytecode: a restored file is then never served from a stale .pyc
    return {**os.environ, "PYTHONPATH": str(copy), "PYTHONDONTWRITEBYTECODE": "1"}


def run_tests(copy: Path, tests: Sequence[str], timeout: float) -> tuple[int, str]:
    """pytest's exit code on `tests` in the copy (124 on timeout), and its output's tail."""
    command = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
               "--no-header", *tests]  # fmt: skip
    try:
        done = subprocess.run(command, cwd=copy, env=_env(copy), capture_output=True,
                              text=True, timeout=timeout)  # fmt: skip
    except subprocess.TimeoutExpired:
        return 124, f"timed out after {timeout:.0f} s"
    return done.returncode, (done.stdout + done.stderr)[-4000:]


def _first_failure(output: str) -> str:
    lines = [line for line in output.splitlines() if line.startswith(("FAILED", "ERROR"))]
    return lines[0][:200] if lines else output.strip().splitlines()[-1][:200]


def check_mutation(copy: Path, mutation: Mutation, timeout: float) -> Outcome:
    """Apply `mutation` to the copy, run its tests, restore the file."""
    path = copy / mutation.file
    original = path.read_text()
    path.write_text(original.replace(mutation.original, mutation.mutated, 1))
    started = time.monotonic()
    try:
        code, output = run_tests(copy, mutation.tests, timeout)
    finally:
        path.write_text(original)
    seconds = time.monotonic() - started
    if code == 0:
        result = "equivalent" if mutation.equivalent else "survived"
        detail = mutation.equivalent or "every test passed"
    elif code in (1, 2, 124):  # a test failed, collection failed, or the tests hung
        result = "killed" if not mutation.equivalent else "killed, though declared equivalent"
        detail = _first_failure(output)
    else:
        result, detail = f"pytest exit {code}", _first_failure(output)
    return Outcome(mutation.name, mutation.file, result, round(seconds, 1), detail)


def _selected(only: Sequence[str]) -> list[Mutation]:
    if not only:
        return list(MUTATIONS)
    known = {m.name: m for m in MUTATIONS}
    unknown = [name for name in only if name not in known]
    if unknown:
        raise SystemExit(f"error: unknown mutation {', '.join(unknown)}; see --list")
    return [known[name] for name in only]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="run this mutation only (repeatable)")  # fmt: skip
    parser.add_argument("--json", type=Path, help="also write the outcomes to this file")
    parser.add_argument("--timeout", type=float, default=TIMEOUT_S, help="seconds a mutation")
    args = parser.parse_args(argv)
    mutations = _selected(args.only)
    problems = check_snippets(mutations)
    if problems:
        print("error: the mutation list does not fit the sources:", *problems, sep="\n  ")
        return 2
    if args.list:
        for m in mutations:
            mark = " (equivalent)" if m.equivalent else ""
            print(f"{m.name}{mark}\n    {m.file}; tests: {' '.join(m.tests)}")
        print(f"{len(mutations)} mutations")
        return 0

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="mixmo-mutation-") as tmp:
        copy = copy_repository(Path(tmp))
        # mixmo_search is a namespace package: its modules must come from the copy
        where = subprocess.run([sys.executable, "-c", "import mixmo_search.train as t; print("
                                "t.__file__)"], env=_env(copy), cwd=copy,
                               capture_output=True, text=True).stdout.strip()  # fmt: skip
        if not where.startswith(str(copy)):
            print(f"error: the tests would import mixmo_search from {where}, not the copy")
            return 2
        for tests in dict.fromkeys(m.tests for m in mutations):  # each selection once
            code, output = run_tests(copy, tests, args.timeout)
            if code != 0:
                print(f"error: without any mutation, {' '.join(tests)} fails: "
                      f"{_first_failure(output)}")  # fmt: skip
                return 2
        print(f"baseline: the tests of {len(mutations)} mutations pass unmutated", flush=True)
        outcomes = []
        for i, mutation in enumerate(mutations, 1):
            outcome = check_mutation(copy, mutation, args.timeout)
            outcomes.append(outcome)
            print(f"[{i}/{len(mutations)}] {outcome.result:<10} {outcome.name} "
                  f"({outcome.seconds:.0f} s): {outcome.detail}", flush=True)  # fmt: skip
    return _report(outcomes, time.monotonic() - started, args.json)


def _report(outcomes: list[Outcome], seconds: float, json_path: Path | None) -> int:
    counts = {r: sum(o.result == r for o in outcomes) for r in ("killed", "survived",
                                                                 "equivalent")}  # fmt: skip
    unexpected = [o for o in outcomes if not o.as_expected]
    print(f"\n{len(outcomes)} mutations: {counts['killed']} killed, {counts['survived']} "
          f"survived, {counts['equivalent']} equivalent (survived as declared), "
          f"{len(unexpected)} unexpected; {seconds / 60:.1f} min on {platform.node()} "
          f"({os.cpu_count()} CPUs)")  # fmt: skip
    for o in unexpected:
        print(f"  UNEXPECTED {o.result}: {o.name} ({o.file}): {o.detail}")
    if json_path is not None:
        json_path.write_text(
            json.dumps(
                {
                    "seconds": round(seconds, 1),
                    "counts": counts,
                    "outcomes": [asdict(o) for o in outcomes],
                },
                indent=2,
            )
        )
    return 0 if not unexpected else 1


if __name__ == "__main__":
    sys.exit(main())
