"""Does `retrain-edge compare` rank backbones as photos it never saw do, and what does a warm rerun cost?

    python scripts/bench_compare.py [--image_dir ../shared/data/flowers] [--salts 4] [--holdout 3]
        [--repeats 1,3,5] [--timing_runs 3] [--timed_repeats 1] [--bottleneck_dir DIR]

Held-out splits: for each of `salts` salts, the photos are cut into `holdout` parts by their burst
key's salted hash (trainer.crossval.salted_hash: the frames of a burst stay together), and each part
is held out in turn, so every salt holds out every photo once. On the rest, compare's statistics
rank the backbones and recommend one, exactly as `compare` does (its own functions, on the cached
bottlenecks); each backbone's head is then trained on the same rest with `train`'s defaults and
scored on the held-out part. Compared per split, for each way compare could judge:

- `before`: one fold assignment, accuracy the mean over folds, the recommendation the cheapest
  within one standard error (over folds) of the best's accuracy (compare until this script);
- `paired, R`: R fold assignments (repeated k-fold), the recommendation the cheapest within one
  standard error of its paired per-photo difference to the best (compare now, R = --repeats);
- `nll`: one fold assignment, ranked by out-of-fold log loss (each photo's NLL of its true class
  after the backbone's out-of-fold temperature, lower first), the recommendation the cheapest
  within one standard error of its paired per-photo NLL difference to the lowest;
- `acc+nll`: ranked as `paired, 1`, the recommendation the cheapest tied with the most accurate
  (as `paired, 1`) and not worse in NLL than the lowest beyond one standard error.

Each judge is checked against the held-out accuracy and against the held-out NLL (each held-out
head's logits divided by the out-of-fold temperature of the seen photos, as `train` folds it in).

Printed first: on every photo, compare's out-of-fold accuracy and NLL per backbone and the paired
differences of the two MobileNetV2s. Then per split, each judge's ranking and recommendation and the held-out accuracies with the
gap between the two held-out leaders ± its paired standard error; per judge, how often its ranking,
its leader, its pairs' order and its recommendation agree with the held-out ones; and how large
the held-out gaps are against their noise. Then, unless --timing_runs 0, the whole
`retrain-edge compare` command runs on every photo, once to fill the caches and `timing_runs`
times warm; the median warm wall time is printed beside its target (3 min on 2 cores). The
backbones are the three whose weights ship with the shared data; their cost order (v1 0.25, then
v2 0.35, then v2 0.5) is the same for every cost compare measures.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import combinations
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"

import numpy as np  # noqa: E402

from trainer.backbones import get_backbone, weights_id  # noqa: E402
from trainer.bottlenecks import BottleneckCache, file_keys  # noqa: E402
from trainer.compare import (  # noqa: E402
    DEFAULT_REPEATS, BackboneFigures, mark_front_and_recommendation, out_of_fold_correct, set_paired_differences,
)
from trainer.calibration import fit_temperature, photo_log_losses  # noqa: E402
from trainer.crossval import (  # noqa: E402
    mean_and_clustered_standard_error, mean_and_standard_error, out_of_fold_logits, paired_difference, repeat_folds,
    salted_hash,
)
from trainer.dataset import list_images  # noqa: E402
from trainer.train import TrainOptions, grid_heads, regularisation_grid, train_head  # noqa: E402

WEIGHTS = SHARED / "weights"
BACKBONES = {  # cheapest first
    "mobilenet_v1_0.25_224": WEIGHTS / "mobilenet_2_5_224_tf_no_top.h5",
    "mobilenet_v2_0.35_224": WEIGHTS / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5",
    "mobilenet_v2_0.5_224": WEIGHTS / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5",
}
SHORT = {"mobilenet_v1_0.25_224": "v1 0.25", "mobilenet_v2_0.35_224": "v2 0.35", "mobilenet_v2_0.5_224": "v2 0.5"}
WARM_TARGET_S = 180


def cached_bottlenecks(bottleneck_dir: Path, architecture: str, weights: Path, paths: list[Path]) -> np.ndarray | None:
    """The vectors compare computed for these photos, or None when some are not cached yet."""
    cache = BottleneckCache.for_backbone(bottleneck_dir, get_backbone(architecture), weights_id(str(weights), 0))
    vectors = [cache.read(key) for key in file_keys(paths)]
    return None if any(vector is None for vector in vectors) else np.stack(vectors)


def compare_command(image_dir: Path, bottleneck_dir: Path, report_dir: Path, repeats: int) -> list[str]:
    return [sys.executable, "-m", "trainer.cli", "compare", "--image_dir", str(image_dir),
            "--architectures", ",".join(BACKBONES), "--weights", ",".join(map(str, BACKBONES.values())),
            "--bottleneck_dir", str(bottleneck_dir), "--report_dir", str(report_dir), "--repeats", str(repeats)]


def run_timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        sys.exit(done.stderr)
    return time.perf_counter() - started


def judge_before(calibrations: dict[str, dict]) -> tuple[list[str], str]:
    """compare until this script: mean over one assignment's folds; the cheapest within one
    standard error over folds of the best's accuracy."""
    stats = {name: mean_and_standard_error(record["fold_accuracies"]) for name, record in calibrations.items()}
    ranking = sorted(stats, key=lambda name: -stats[name][0])
    best_accuracy, best_error = stats[ranking[0]]
    recommended = next(name for name in BACKBONES if stats[name][0] >= best_accuracy - best_error)
    return ranking, recommended


def paired_figures(correct: dict[str, np.ndarray], file_names: list[str]) -> list[BackboneFigures]:
    """compare's rows for these per-photo correctnesses, with its paired differences; cost in BACKBONES order."""
    figures = [BackboneFigures(name, "", [], float(rows.mean()), 0.0, 0.0, 1.0, 0.0, 0, 0, float(cost))
               for cost, (name, rows) in enumerate(correct.items())]
    set_paired_differences(figures, list(correct.values()), file_names)
    return figures


def judge_paired(correct: dict[str, np.ndarray], file_names: list[str]) -> tuple[list[str], str]:
    """compare now, with as many fold assignments as `correct` has rows: its own functions."""
    figures = paired_figures(correct, file_names)
    mark_front_and_recommendation(figures)
    ranking = [row.architecture for row in sorted(figures, key=lambda row: -row.accuracy)]
    return ranking, next(row.architecture for row in figures if row.recommended)


def out_of_fold_log_losses(options: TrainOptions, bottlenecks: np.ndarray, labels: np.ndarray,
                           file_names: list[str], class_count: int) -> np.ndarray:
    """(n,) each photo's NLL under `train`'s out-of-fold heads (first fold assignment), after the
    temperature fitted on all those out-of-fold logits, as compare fits it."""
    fold_of = repeat_folds(file_names, options.folds, 0)
    logits = out_of_fold_logits(grid_heads(options, regularisation_grid(options), class_count), bottlenecks, labels,
                                fold_of, class_count)[0]
    return photo_log_losses(logits, labels, fit_temperature(logits, labels))


def judge_nll(losses: dict[str, np.ndarray], file_names: list[str]) -> tuple[list[str], str]:
    """Ranked by out-of-fold NLL, lowest first; the cheapest within one standard error of its paired
    NLL difference to the lowest."""
    ranking = sorted(losses, key=lambda name: losses[name].mean())
    return ranking, next(name for name in BACKBONES if not nll_worse(losses, ranking[0], name, file_names))


def nll_worse(losses: dict[str, np.ndarray], best: str, name: str, file_names: list[str]) -> bool:
    """Is `name`'s NLL above `best`'s by more than one standard error of the paired difference?"""
    difference, error = mean_and_clustered_standard_error(losses[name] - losses[best], file_names)
    return difference > error


def judge_accuracy_and_nll(correct: dict[str, np.ndarray], losses: dict[str, np.ndarray],
                           file_names: list[str]) -> tuple[list[str], str]:
    """Ranked by accuracy; the cheapest tied with the most accurate (paired, one fold assignment)
    and not worse in NLL than the lowest beyond one standard error (the most accurate when none is both)."""
    figures = paired_figures(correct, file_names)
    ranking = [row.architecture for row in sorted(figures, key=lambda row: -row.accuracy)]
    lowest = min(losses, key=lambda name: losses[name].mean())
    chosen = [row.architecture for row in figures
              if row.tied_with_best and not nll_worse(losses, lowest, row.architecture, file_names)]
    return ranking, chosen[0] if chosen else ranking[0]


def order(ranking: list[str]) -> str:
    return " > ".join(SHORT[name] for name in ranking)


def print_agreement(agree: dict, gaps: dict, held_correct_by_salt: dict, splits: int, names: list[str],
                    file_names: list[str]) -> None:
    """How often each judge agrees with the held-out parts, and how large the held-out gaps are against their noise."""
    pair_count = len(names) * (len(names) - 1) // 2
    for reference, records in agree.items():
        print(f"\nagreement with the held-out part's {reference} over {splits} splits (a tie: within one standard "
              f"error of the held-out paired difference to the held-out leader):")
        print(f"{'judge':<12}{'same ranking':>14}{'same leader':>13}{'pairs in order':>16}"
              f"{'recommends held-out best':>26}{'recommends one tied with it':>29}")
        for judge, record in records.items():
            print(f"{judge:<12}{record['ranking']:>10}/{splits:<3}{record['leader']:>9}/{splits:<3}"
                  f"{record['pairs']:>11}/{splits * pair_count:<4}{record['recommended best']:>22}/{splits:<3}"
                  f"{record['recommended tied']:>25}/{splits:<3}")
    print("\nheld-out gaps against their noise (later minus earlier backbone, per split: median gap, median "
          "standard error, splits where |gap| > 1 s.e. / 2 s.e.):")
    for (cheap, dear), values in gaps.items():
        differences, errors = zip(*values)
        print(f"  {SHORT[dear]} - {SHORT[cheap]}: {statistics.median(differences):+.1%}, ± {statistics.median(errors):.1%}; "
              f"{sum(abs(d) > e for d, e in values)}/{len(values)}, {sum(abs(d) > 2 * e for d, e in values)}/{len(values)}")
    print("every photo held out once per salt (heads trained on the other parts), accuracy and the paired gap:")
    for salt, held_correct in held_correct_by_salt.items():
        accuracies = " / ".join(f"{SHORT[name]} {held_correct[name].mean():.1%}" for name in names)
        pooled = "; ".join(f"{SHORT[dear]} - {SHORT[cheap]} {d:+.1%} ± {e:.1%}" for cheap, dear in combinations(names, 2)
                           for d, e in [paired_difference(held_correct[dear], held_correct[cheap], file_names)])
        print(f"  salt {salt}: {accuracies}; {pooled}")


def print_nll_gaps(nll_gaps: list, dear: str, cheap: str) -> None:
    """Does the out-of-fold NLL separate the two MobileNetV2s consistently, and does the held-out NLL?"""
    for index, where in enumerate(("out of fold (seen photos)", "held out")):
        values = [split[index] for split in nll_gaps]
        differences = [difference for difference, _ in values]
        print(f"{dear} - {cheap} NLL {where}, per split: median {statistics.median(differences):+.3f} ± "
              f"{statistics.median(error for _, error in values):.3f}; negative in {sum(d < 0 for d in differences)}/"
              f"{len(values)}, beyond one s.e. {sum(abs(d) > e for d, e in values)}/{len(values)}, beyond two "
              f"{sum(abs(d) > 2 * e for d, e in values)}/{len(values)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_dir", type=Path, default=SHARED / "flowers")
    parser.add_argument("--salts", type=int, default=4, help="salted cuts of the photos; each holds out every photo once")
    parser.add_argument("--holdout", type=int, default=3, help="parts per cut: 3 holds out a third at a time")
    parser.add_argument("--repeats", default="1,3,5", help="fold assignments of the paired judges")
    parser.add_argument("--timing_runs", type=int, default=3, help="warm runs of the whole command (0: none)")
    parser.add_argument("--timed_repeats", type=int, default=DEFAULT_REPEATS, help="--repeats of the timed command")
    parser.add_argument("--bottleneck_dir", type=Path, default=None, help="cache to reuse (default: a temporary one)")
    arguments = parser.parse_args()
    if not arguments.image_dir.is_dir():
        sys.exit(f"{arguments.image_dir} not found: pass --image_dir")
    repeat_counts = sorted({int(value) for value in arguments.repeats.split(",")})
    judges = ["before"] + [f"paired, {count}" for count in repeat_counts] + ["nll", "acc+nll"]
    names = list(BACKBONES)
    images = list_images(arguments.image_dir, 0, 0)
    examples = images.examples("training")
    paths = [images.image_dir / path for path, _ in examples]
    file_names = [path.name for path in paths]
    labels = np.array([label for _, label in examples], np.int64)
    options = TrainOptions(image_dir=images.image_dir)
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        bottleneck_dir = arguments.bottleneck_dir or work / "cache"
        command = compare_command(arguments.image_dir, bottleneck_dir, work / "all", arguments.timed_repeats)
        bottlenecks = {name: cached_bottlenecks(bottleneck_dir, name, weights, paths) for name, weights in BACKBONES.items()}
        first_s = None
        if any(vectors is None for vectors in bottlenecks.values()):
            first_s = run_timed(command)
            bottlenecks = {name: cached_bottlenecks(bottleneck_dir, name, weights, paths)
                           for name, weights in BACKBONES.items()}
        warm = [run_timed(command) for _ in range(arguments.timing_runs)]

    agree = {reference: {judge: {"ranking": 0, "leader": 0, "pairs": 0, "recommended best": 0,
                                 "recommended tied": 0} for judge in judges} for reference in ("accuracy", "NLL")}
    nll_gaps = []  # per split: out-of-fold and held-out NLL of v2 0.5 minus v2 0.35, each (difference, s.e.)
    gaps = {pair: [] for pair in combinations(names, 2)}  # (held-out gap, its standard error) per split
    held_correct_by_salt = {}
    splits = 0
    print(f"{len(labels)} photos, {arguments.salts} salts x {arguments.holdout} held-out parts; heads as `train` "
          f"trains them ({options.how_many_training_steps} steps); {options.folds}-fold judges")
    cheap_v2, dear_v2 = "mobilenet_v2_0.35_224", "mobilenet_v2_0.5_224"
    all_losses = {name: out_of_fold_log_losses(options, bottlenecks[name], labels, file_names, len(images.labels))
                  for name in names}
    print("all photos, out-of-fold NLL after the temperature: "
          + " / ".join(f"{SHORT[name]} {all_losses[name].mean():.4f}" for name in names)
          + "; {} - {}: NLL {:+.4f} ± {:.4f}".format(
              SHORT[dear_v2], SHORT[cheap_v2],
              *mean_and_clustered_standard_error(all_losses[dear_v2] - all_losses[cheap_v2], file_names)))
    for salt in range(arguments.salts):
        part_of = np.array([salted_hash(name, f"held-out-{salt}") % arguments.holdout for name in file_names])
        held_correct_by_salt[salt] = {name: np.zeros(len(labels), bool) for name in names}
        for part in range(arguments.holdout):
            held, seen = part_of == part, part_of != part
            seen_names = [name for name, keep in zip(file_names, seen) if keep]
            held_names = [name for name, keep in zip(file_names, held) if keep]
            calibrations, correct, losses, held_out, held_losses = {}, {}, {}, {}, {}
            for name in names:
                calibrations[name], correct[name] = out_of_fold_correct(
                    options, bottlenecks[name][seen], labels[seen], seen_names, len(images.labels), max(repeat_counts))
                losses[name] = out_of_fold_log_losses(options, bottlenecks[name][seen], labels[seen], seen_names,
                                                      len(images.labels))
                empty = np.zeros((0, bottlenecks[name].shape[1]), np.float32)
                head, _ = train_head(options, bottlenecks[name][seen], labels[seen], empty, np.zeros(0, np.int64),
                                     len(images.labels), None)
                held_logits = head.logits(bottlenecks[name][held])
                held_out[name] = held_logits.argmax(axis=1) == labels[held]
                held_losses[name] = photo_log_losses(held_logits, labels[held], calibrations[name]["temperature"])
                held_correct_by_salt[salt][name][held] = held_out[name]
            held_accuracy = {name: float(held_out[name].mean()) for name in names}
            held_ranking = sorted(names, key=lambda name: -held_accuracy[name])
            held_nll_ranking = sorted(names, key=lambda name: held_losses[name].mean())
            nll_gaps.append((mean_and_clustered_standard_error(losses[dear_v2] - losses[cheap_v2], seen_names),
                             mean_and_clustered_standard_error(held_losses[dear_v2] - held_losses[cheap_v2],
                                                               held_names)))
            for pair in gaps:
                gaps[pair].append(paired_difference(held_out[pair[1]], held_out[pair[0]], held_names))
            lead, second = held_ranking[:2]
            lead_gap, lead_error = paired_difference(held_out[lead], held_out[second], held_names)
            print(f"salt {salt} part {part}: {seen.sum()} seen, {held.sum()} held out; held out "
                  f"{' / '.join(f'{SHORT[name]} {held_accuracy[name]:.1%}' for name in names)}: "
                  f"{order(held_ranking)} (lead {lead_gap:+.1%} ± {lead_error:.1%}); held-out NLL "
                  f"{' / '.join(f'{SHORT[name]} {held_losses[name].mean():.3f}' for name in names)}: "
                  f"{order(held_nll_ranking)}; {SHORT[dear_v2]} - {SHORT[cheap_v2]} NLL out of fold "
                  "{:+.3f} ± {:.3f}, held out {:+.3f} ± {:.3f}".format(*nll_gaps[-1][0], *nll_gaps[-1][1]))
            for judge in judges:
                if judge == "before":
                    ranking, recommended = judge_before(calibrations)
                elif judge == "nll":
                    ranking, recommended = judge_nll(losses, seen_names)
                elif judge == "acc+nll":
                    ranking, recommended = judge_accuracy_and_nll({name: rows[:1] for name, rows in correct.items()},
                                                                  losses, seen_names)
                else:
                    count = int(judge.split(", ")[1])
                    ranking, recommended = judge_paired({name: rows[:count] for name, rows in correct.items()},
                                                        seen_names)
                for reference, reference_ranking in (("accuracy", held_ranking), ("NLL", held_nll_ranking)):
                    record = agree[reference][judge]
                    record["ranking"] += ranking == reference_ranking
                    record["leader"] += ranking[0] == reference_ranking[0]
                    record["pairs"] += sum(ranking.index(a) < ranking.index(b)
                                           for a, b in combinations(reference_ranking, 2))
                    record["recommended best"] += recommended == reference_ranking[0]
                    if reference == "accuracy":
                        gap, error = paired_difference(held_out[held_ranking[0]], held_out[recommended], held_names)
                    else:
                        gap, error = mean_and_clustered_standard_error(
                            held_losses[recommended] - held_losses[held_nll_ranking[0]], held_names)
                    record["recommended tied"] += gap <= error
                print(f"    {judge:<10} ranks {order(ranking)}, recommends {SHORT[recommended]}")
            splits += 1

    if splits:
        print_agreement(agree, gaps, held_correct_by_salt, splits, names, file_names)
        print_nll_gaps(nll_gaps, SHORT[dear_v2], SHORT[cheap_v2])
    if warm:
        print(f"`retrain-edge compare`, all {len(labels)} photos, {len(names)} backbones, --repeats {arguments.timed_repeats}: "
              + (f"first run {first_s:.1f} s; " if first_s is not None else "")
              + f"warm median {statistics.median(warm):.1f} s (min {min(warm):.1f}, {len(warm)} runs; target "
              f"<= {WARM_TARGET_S} s)")


if __name__ == "__main__":
    main()
