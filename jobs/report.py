"""Build the study's report (Markdown, HTML, figures, summary.parquet) from a sweep's Parquet.

    python -m jobs.report --results RESULTS/RUN [--out DIR] [--data PATH]
"""

from __future__ import annotations

import argparse

from jobs.common import main_guard


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.report", description=__doc__.splitlines()[0])
    p.add_argument("--results", required=True, help="the run's folder, RESULTS/RUN, as jobs.sweep wrote it (a path or URI)")
    p.add_argument("--out", help="where to write the report (default: RESULTS/RUN/report)")
    p.add_argument("--data", help="where the run's data lies now, for the gallery of mistakes (default: as run.json says)")
    args = p.parse_args(argv)
    import pandas as pd

    from beanlib.report import build_report

    report = build_report(args.results, args.out, args.data)
    shown = report.summary[["factor", "setting", "chosen", "n", "val_accuracy", "test_accuracy", "ci95_low", "ci95_high",
                            "new_low", "new_high", "original_test_accuracy", "original_p", "trainable_params"]].rename(
        columns={"ci95_low": "seeds_low", "ci95_high": "seeds_high"})  # over seeds on these test images; for new images
    with pd.option_context("display.width", 160, "display.max_rows", 200, "display.float_format", "{:.1f}".format):
        print(shown.to_string(index=False))
    if report.missing:
        print(f"partial: {len(report.missing)} planned trials have no row yet")
    print(f"report: {report.out_dir / 'report.md'} and {report.out_dir / 'report.html'}")
    return 0


if __name__ == "__main__":
    main_guard(main)
