"""A grid and a search that asked one question with one budget, side by side, from their committed runs.

    python -m benchmarks.search_vs_grid [--grid results/lenet-l2-128] [--search results/lenet-l2-tpe-128]

For each run: its best setting by mean validation accuracy over its seeds (what each chose), that setting's test
mean, and the trials and training compute each spent before its best-so-far came within 1 point of its final best
(the trials in the order they finished; a setting counts once all its seeds have finished). Compute is the trials'
summed `train_seconds`, which depends on the machine and its load; the trial count does not.
"""

from __future__ import annotations

import argparse


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.search_vs_grid", description=__doc__.splitlines()[0])
    p.add_argument("--grid", default="results/lenet-l2-128")
    p.add_argument("--search", default="results/lenet-l2-tpe-128")
    p.add_argument("--within", type=float, default=1.0, help="points of validation accuracy (default 1)")
    args = p.parse_args(argv)

    from beanlib.report import load_run
    from beanlib.searchreport import best_so_far, within

    print(f"{'run':<22} {'trials':>6} {'best setting':<36} {'val %':>6} {'test %':>6} "
          f"{'trials to within':>17} {'compute h':>10} {'of h':>6}")
    for path in (args.grid, args.search):
        trials = load_run(path)[0]
        curve = best_so_far(trials)
        reached = within(curve, args.within)
        best = curve.iloc[-1]
        values = trials[trials["setting"] == best["best"]].iloc[0]
        label = f"{best['best']} (lr {values['learning_rate']:.2g}, l2 {values['reg_strength']:.2g})"
        print(f"{path.rstrip('/').rsplit('/', 1)[-1]:<22} {len(curve):>6} {label:<36} {best['best_val']:>6.1f} "
              f"{best['best_test']:>6.1f} {int(reached['trial']):>17} {reached['compute_seconds'] / 3600:>10.2f} "
              f"{curve['compute_seconds'].iloc[-1] / 3600:>6.2f}")


if __name__ == "__main__":
    main()
