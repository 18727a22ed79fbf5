"""The ``gan-pipeline`` command: ``train`` and ``sample``.

Mistakes a user can fix (bad config, unknown names, missing data or models) print one
``gan-pipeline: error: ...`` line and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys


def _quiet_tensorflow() -> None:
    # TF's C++ start-up banner (CPU features, CUDA probing) buries the progress bar; keep errors.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # MLflow probes git; not an error here
    # MLflow announces its SQLite schema migrations at INFO on every new store; keep warnings.
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gan-pipeline", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a GAN from a pipeline file into one MLflow run")
    t.add_argument("--config", required=True, help="pipeline file, e.g. pipelines/mnist_dcgan.toml")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting (repeatable): epochs=3, train.loss=minimax, ...")

    s = sub.add_parser("sample", help="draw samples from a trained generator")
    s.add_argument("--model", required=True,
                   help="a .keras file, an MLflow run id, or an MLflow model URI")
    s.add_argument("--n", type=int, default=100, help="number of samples (default 100)")
    s.add_argument("--out", required=True, help="a .npy file (all samples) or .png (a picture)")
    s.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    s.add_argument("--tracking-uri", default="",
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, then ./mlflow.db)")
    return p


def run_train(args) -> None:
    from gan_pipeline import config
    from gan_pipeline.train import train

    cfg = config.load(args.config, args.overrides)
    train(cfg)


def run_sample(args) -> None:
    from gan_pipeline import sampling

    generator = sampling.load_generator(args.model, args.tracking_uri)
    samples = sampling.sample(generator, args.n, seed=args.seed)
    out = sampling.write(samples, args.out)
    print(f"Wrote {out}: {samples.shape[0]} samples of shape {samples.shape[1:]}, float32, "
          f"range [{samples.min():.3f}, {samples.max():.3f}]")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    _quiet_tensorflow()
    from gan_pipeline.errors import UserError

    try:
        {"train": run_train, "sample": run_sample}[args.command](args)
    except UserError as exc:
        print(f"gan-pipeline: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
