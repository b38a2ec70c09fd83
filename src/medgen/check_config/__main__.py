"""``uv run python -m medgen.check_config --env cluster``: see `medgen.check_config`."""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

from medgen.check_config.check import check_environment
from medgen.check_config.report import markdown


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m medgen.check_config",
        description="Resolve an environment's parameters as `kedro run --env ENV` would, parse "
        "every block, build every training job's model on the meta device and report its "
        "parameters and the memory of one training step per GPU.",
    )
    parser.add_argument("--env", default="local", help="conf/<env> over conf/base (default local)")
    parser.add_argument("--conf-source", default="conf", help="the project's conf folder")
    parser.add_argument(
        "--pipelines", nargs="*", default=None, help="only these pipelines (default all)"
    )
    parser.add_argument("--output", default=None, help="also write the report to this file")
    args = parser.parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # library deprecations are not the check's findings
        check = check_environment(args.env, args.conf_source, pipelines=args.pipelines)
    report = markdown(check)
    sys.stdout.write(report)
    if args.output:
        Path(args.output).write_text(report, encoding="utf-8")
    return 1 if check.problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
