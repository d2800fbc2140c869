#!/usr/bin/env python
"""Benchmark: do uniform diffusion's denoising steps change anything? (issue 18, item 4)

Trains one uniform-diffusion model (leave-one-out split, seed 0), then, with
that one model and no retraining:

1. diagnosis: on the real validation histories, for every conditioning
   timestep t = 1..T, how many positions the noise head flags (predicted
   corruption probability > 0.5, what the ``threshold`` reverse process
   replaces), and, for comparison, how many it flags on the same histories
   after corrupting them at beta_bar_t (seeded), split into the positions that
   were corrupted and those that were not;
2. a steps curve: validation and test NDCG@10 / HR@10 for each reverse process
   (``threshold``, ``ranked``) at each number of steps, with the number of
   positions replaced per validation user and the share of users whose
   denoised history differs from the observed one.

The model is trained with the ``threshold`` process at 1 step (what it is
validated with during training; at 1 step from t_start it costs 2 encoder
passes per validation). One torch thread; run with ``OMP_NUM_THREADS=1``.

    OMP_NUM_THREADS=1 python -m bench.perf.uniform_steps --dataset ml-100k --preset h64

Prints tables and writes results/benchmarks/uniform-steps[-<dataset>-<preset>].json
(``--out`` to choose), atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tabulate import tabulate  # noqa: E402

from bench.data import load_dataset, resolve_data_root  # noqa: E402
from bench.files import atomic_write  # noqa: E402
from bench.protocol.evaluation import evaluate, left_padded  # noqa: E402
from bench.protocol.splits import make_split  # noqa: E402
from bench.provenance import code_version, hardware  # noqa: E402
from bench.run.config import ProtocolConfig  # noqa: E402
from bench.run.trial import fit_trial, make_trial_spec  # noqa: E402
from diffusion.uniform_diffusion import REVERSE_PROCESSES, UniformNoise, corrupt  # noqa: E402

PRESETS = {
    # bench/suites/smoke.yaml, uniform-diffusion-tiny (smoke's training defaults: patience 2)
    "tiny": ({"max_len": 50, "hidden_size": 32, "n_blocks": 1},
             {"epochs": 15, "batch_size": 32, "lr": 0.005, "eval_every": 3, "patience": 2}),
    # the suites' uniform-diffusion rows (hidden 64, 2 blocks, 2 heads, dropout 0.2)
    "h64": ({"hidden_size": 64, "n_blocks": 2, "n_heads": 2, "dropout": 0.2},
            {"epochs": 200, "batch_size": 128, "lr": 0.001, "eval_every": 2, "patience": 3}),
}
FAMILY_MAX_LEN = {"ml": 200, "amazon": 50}  # the model's family defaults (movielens 200, amazon 50)


@torch.no_grad()
def flag_diagnosis(model, histories: torch.Tensor, n_items: int, train) -> list[dict]:
    """Per timestep t: noise-head flags (p > 0.5) on the real histories and on them corrupted at beta_bar_t."""
    rows = []
    real = histories > 0
    eligible = real.clone()
    eligible[:, 1:] &= real[:, :-1]
    eligible[:, 0] = False  # the threshold process never replaces position 0 nor a first real item
    noise = UniformNoise(train, n_items)
    for t in range(1, model.config.diffusion_steps + 1):
        level = torch.full((len(histories),), t, dtype=torch.long)
        probability = torch.sigmoid(model.noise_head(model.encoder(histories, model.condition(level))).squeeze(-1))
        flagged = (probability > 0.5) & eligible
        noisy, corrupted = corrupt(histories.numpy(), np.full(len(histories), model.beta_bar[t]), noise, np.random.default_rng(t))
        noisy_t = torch.from_numpy(noisy)
        corrupted_t = torch.from_numpy(corrupted)
        noisy_probability = torch.sigmoid(model.noise_head(model.encoder(noisy_t, model.condition(level))).squeeze(-1))
        noisy_flagged = noisy_probability > 0.5
        on_corrupted = noisy_probability[eligible & corrupted_t]
        on_clean = noisy_probability[eligible & ~corrupted_t]
        rows.append({
            "t": t, "beta_bar": float(model.beta_bar[t]),
            "real_flagged_per_user": flagged.sum().item() / len(histories),
            "real_flagged_share": flagged.sum().item() / eligible.sum().item(),
            "real_users_with_a_flag": flagged.any(1).float().mean().item(),
            "real_probability_mean": probability[eligible].mean().item(),
            "real_probability_max": probability[eligible].max().item(),
            "corrupted_share": (eligible & corrupted_t).sum().item() / eligible.sum().item(),
            "noisy_flagged_share_on_corrupted": (noisy_flagged[eligible & corrupted_t]).float().mean().item(),
            "noisy_flagged_share_on_clean": (noisy_flagged[eligible & ~corrupted_t]).float().mean().item(),
            "noisy_probability_mean_on_corrupted": on_corrupted.mean().item(),
            "noisy_probability_mean_on_clean": on_clean.mean().item(),
        })
    return rows


class NoDenoising:
    """The trained model scoring the observed history at t = 0 with no denoising step: the reference."""

    def __init__(self, model):
        self.model = model

    def eval(self):
        self.model.eval()
        return self

    @torch.no_grad()
    def score(self, histories: torch.Tensor) -> torch.Tensor:
        tokens = histories[:, -self.model.config.max_len:]
        clean = torch.zeros(len(tokens), dtype=torch.long, device=tokens.device)
        return self.model.logits(self.model.encoder(tokens, self.model.condition(clean))[:, -1])


@torch.no_grad()
def replacement_counts(model, histories: torch.Tensor) -> dict:
    """Positions replaced per user (per step and in all), where they lie, and the share of users whose history changed."""
    trace = model.denoise_trace(histories)
    per_step = [replaced.sum().item() / len(histories) for _, _, replaced in trace]
    changed = trace[-1][1] != histories  # [B, L], the final history differs from the observed one here
    replaced = torch.zeros_like(changed)
    for _, _, step_replaced in trace:
        replaced |= step_replaced
    from_end = histories.shape[1] - 1 - torch.nonzero(replaced)[:, 1]  # 0 = the last item
    total = max(1, len(from_end))
    return {"levels": [level for level, _, _ in trace], "replaced_per_user_per_step": per_step,
            "replaced_per_user": sum(per_step), "users_changed": changed.any(1).float().mean().item(),
            "changed_per_user": changed.sum().item() / len(histories),
            "replaced_share_last_item": (from_end == 0).sum().item() / total,
            "replaced_share_last_5": (from_end < 5).sum().item() / total}


def rank_change(ranks: np.ndarray, reference: np.ndarray) -> dict:
    """How far the target's rank moved from the no-denoising reference (1 = best rank)."""
    moved = ranks != reference
    return {"users_rank_changed": float(moved.mean()),
            "mean_abs_log2_rank_change": float(np.abs(np.log2(ranks) - np.log2(reference)).mean())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="ml-100k")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="h64")
    parser.add_argument("--max-minutes", type=float, default=10.0, help="training time budget")
    parser.add_argument("--steps", type=int, nargs="+", default=[1, 2, 5, 10, 20])
    parser.add_argument("--denoise-from", type=float, nargs="+", default=[0.25], help="t_start / T values to sweep")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--eval-users", type=int, help="score only the first N validation and test users after training (a cheaper curve)")
    parser.add_argument("--data-root")
    parser.add_argument("--out", help="output JSON, relative to the repository (default results/benchmarks/uniform-steps-<dataset>-<preset>.json)")
    args = parser.parse_args()
    torch.set_num_threads(1)

    protocol = ProtocolConfig(split="loo")
    data = load_dataset(args.dataset, resolve_data_root(args.data_root))
    split = make_split(data, protocol.split)
    fingerprint = split.fingerprint  # of the whole split, before any --eval-users subset
    params, training = PRESETS[args.preset]
    params = {"max_len": FAMILY_MAX_LEN["ml" if args.dataset.startswith("ml") else "amazon"], **params,
              "steps": 1, "reverse": "threshold"}
    training = {**training, "max_minutes": args.max_minutes}
    spec = make_trial_spec(args.dataset, f"uniform-diffusion-{args.preset}", "uniform_diffusion", args.seed, params, training, protocol)
    print(f"{args.dataset}: {data.n_users} users, {data.n_items} items; split {split.fingerprint}; training {params} {training}", flush=True)

    def progress(record: dict) -> None:
        print(f"epoch {record['epoch']:3d}  loss {record['loss']:.4f}  valid NDCG@10 {record['valid_ndcg@10']:.4f}", flush=True)

    model, summary, fit_seconds = fit_trial(spec, split, progress)
    model.eval()
    trained_config = model.config
    if args.eval_users:
        split = dataclasses.replace(split, valid=split.valid.head(args.eval_users), test=split.test.head(args.eval_users))
    valid_histories = left_padded(split.valid.histories, np.arange(len(split.valid)), trained_config.max_len)

    diagnosis = flag_diagnosis(model, valid_histories, split.n_items, split.train)
    print("\nnoise head on the validation histories (flag = predicted corruption probability > 0.5):")
    print(tabulate([[d["t"], f"{d['beta_bar']:.2f}", f"{d['real_flagged_per_user']:.3f}", f"{d['real_flagged_share']:.4f}",
                     f"{d['real_users_with_a_flag']:.3f}", f"{d['real_probability_mean']:.3f}", f"{d['real_probability_max']:.3f}",
                     f"{d['noisy_flagged_share_on_corrupted']:.3f}", f"{d['noisy_flagged_share_on_clean']:.4f}"] for d in diagnosis],
                   headers=["t", "beta_bar", "flagged / user", "flagged share", "users with a flag", "mean p", "max p",
                            "corrupted copy: flagged on corrupted", "on clean"], tablefmt="github"), flush=True)

    reference_valid = evaluate(NoDenoising(model), split.valid, split.n_items, protocol.ks)
    reference_test = evaluate(NoDenoising(model), split.test, split.n_items, protocol.ks)
    reference = {"valid_ndcg@10": reference_valid.metrics["ndcg@10"], "valid_hr@10": reference_valid.metrics["hr@10"],
                 "test_ndcg@10": reference_test.metrics["ndcg@10"], "test_hr@10": reference_test.metrics["hr@10"]}
    print(f"no denoising (history scored at t = 0): valid NDCG@10 {reference['valid_ndcg@10']:.4f}, "
          f"test {reference['test_ndcg@10']:.4f}", flush=True)
    command = "OMP_NUM_THREADS=1 python -m bench.perf.uniform_steps " + " ".join(sys.argv[1:])
    out = ROOT / (args.out or f"results/benchmarks/uniform-steps-{args.dataset}-{args.preset}.json")

    def write(curve: list[dict], complete: bool) -> None:
        """The record so far, rewritten atomically after every row, so that an interrupted run keeps its rows."""
        record = {"command": command, "complete": complete, "dataset": args.dataset, "split_fingerprint": fingerprint,
                  "preset": args.preset, "params": params, "training": training, "seed": args.seed, "threads": 1,
                  "torch": torch.__version__, "hardware": hardware("cpu"), **code_version(),
                  "trained_with": "reverse threshold, 1 step from denoise_from 0.25 (validation during training)",
                  "epochs_run": summary.epochs_run, "best_epoch": summary.best_epoch, "fit_seconds": fit_seconds,
                  "n_valid_users": len(split.valid), "n_test_users": len(split.test), "eval_users": args.eval_users,
                  "no_denoising": reference, "diagnosis": diagnosis, "curve": curve}
        atomic_write(out, json.dumps(record, indent=2))

    curve = []
    for denoise_from in args.denoise_from:
        for reverse in REVERSE_PROCESSES:
            for steps in args.steps:
                model.config = dataclasses.replace(trained_config, reverse=reverse, steps=steps, denoise_from=denoise_from)
                model.config.validate()
                started = time.perf_counter()
                valid_result = evaluate(model, split.valid, split.n_items, protocol.ks)
                test_result = evaluate(model, split.test, split.n_items, protocol.ks)
                seconds = time.perf_counter() - started
                valid, test = valid_result.metrics, test_result.metrics
                counts = replacement_counts(model, valid_histories)
                moved = rank_change(valid_result.ranks, reference_valid.ranks)
                curve.append({"reverse": reverse, "denoise_from": denoise_from, "steps": steps,
                              "valid_ndcg@10": valid["ndcg@10"], "valid_hr@10": valid["hr@10"],
                              "test_ndcg@10": test["ndcg@10"], "test_hr@10": test["hr@10"],
                              "eval_seconds_valid_and_test": seconds, **counts,
                              **{f"valid_{k}": v for k, v in moved.items()}})
                write(curve, complete=False)
                print(f"{reverse} from {denoise_from} x {steps} steps: valid NDCG@10 {valid['ndcg@10']:.4f}, "
                      f"test {test['ndcg@10']:.4f}, replaced/user {counts['replaced_per_user']:.2f} ({seconds:.0f} s)", flush=True)
    model.config = trained_config
    headers = ["reverse", "t_start / T", "steps", "valid NDCG@10", "test NDCG@10", "valid HR@10", "test HR@10",
               "replaced / user", "of them last item", "users changed", "valid ranks moved", "eval s"]
    table = [["none (t = 0)", "", 0, f"{reference['valid_ndcg@10']:.4f}", f"{reference['test_ndcg@10']:.4f}",
              f"{reference['valid_hr@10']:.4f}", f"{reference['test_hr@10']:.4f}", "0", "", "0", "0", ""]]
    table += [[c["reverse"], c["denoise_from"], c["steps"], f"{c['valid_ndcg@10']:.4f}", f"{c['test_ndcg@10']:.4f}",
               f"{c['valid_hr@10']:.4f}", f"{c['test_hr@10']:.4f}", f"{c['replaced_per_user']:.2f}",
               f"{c['replaced_share_last_item']:.3f}", f"{c['users_changed']:.3f}", f"{c['valid_users_rank_changed']:.3f}",
               f"{c['eval_seconds_valid_and_test']:.1f}"] for c in curve]
    print(f"\nsteps curve, one trained model ({args.dataset}, {args.preset}, best epoch {summary.best_epoch} of {summary.epochs_run}):")
    print(tabulate(table, headers=headers, tablefmt="github"))

    write(curve, complete=True)
    print(f"written: {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
