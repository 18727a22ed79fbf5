"""The ``gan-pipeline`` command: ``run``, ``train``, ``sample``, ``evaluate`` and ``server``.

Mistakes a user can fix (bad config, unknown names, missing data or models) print one
``gan-pipeline: error: ...`` line and exit with status 2. The package is imported inside each
command, after the environment is set up (TensorFlow's log level, ``TF_CONFIG``'s collective
ops), and so that ``--help`` answers without loading TensorFlow.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import os
import shlex
import sys


def quiet_tensorflow() -> None:
    # TF's C++ start-up banner (CPU features, CUDA probing) buries the progress bar; keep errors.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")  # MLflow probes git; not an error here
    # Stages read small artifacts of earlier runs; a progress bar per read is noise.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow prints a run's URL as it ends, credentials and all; ours says it without them.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    # MLflow announces its SQLite schema migrations at INFO on every new store; keep warnings.
    for name in ("mlflow.store.db.utils", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)


def freeze_imports() -> None:
    """Hide what the imports made from the cyclic garbage collector, and turn it back on.

    TensorFlow, Keras and MLflow leave ~480,000 objects that live as long as the process, and
    every full collection walks them all: ~1 s each on a 2-core CPU, about ten while they are
    imported, more while a model traces and two per Keras Tuner trial (its `clear_session()`
    and `gc.collect()`). So the commands import with the collector off (`gc.disable()`), then
    freeze what exists, as Python's docs for `gc.freeze` describe. Once per process: a later
    call (the tests call `main` in-process) only turns the collector back on, so objects of
    later work are never frozen and are collected as before."""
    if gc.get_freeze_count() == 0:
        gc.freeze()
    gc.enable()


TRUNCATION_HELP = ("the truncation trick at this threshold instead of the one saved in the "
                   "generator (0 = off; normal-noise generators)")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gan-pipeline", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run a pipeline's stages: prepare, tune, train, evaluate, "
                                   "register (finished stages with the same inputs are reused)")
    r.add_argument("pipeline", help="pipeline file, e.g. pipelines/mnist_dcgan.toml")
    r.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting (repeatable): profile=quick, epochs=3, ...")
    r.add_argument("--only", metavar="STAGE", default=None,
                   help="run just this stage, reusing the finished runs of the stages it reads")
    r.add_argument("--force", metavar="STAGE", default=None,
                   help="recompute this stage and every stage after it (no reuse)")

    t = sub.add_parser("train", help="train a GAN from a pipeline file into one MLflow run")
    t.add_argument("--config", required=True, help="pipeline file, e.g. pipelines/mnist_dcgan.toml")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a setting (repeatable): epochs=3, train.loss=minimax, ...")
    t.add_argument("--resume", action="store_true",
                   help="continue this pipeline's checkpointed run, in the same MLflow run")

    s = sub.add_parser("sample", help="draw samples from a trained generator")
    s.add_argument("--model", required=True,
                   help="a .keras file, an MLflow run id, or an MLflow model URI")
    s.add_argument("--n", type=int, default=100, help="number of samples (default 100)")
    s.add_argument("--out", required=True, help="a .npy file (all samples), .npz (arrays samples and, for a "
                        "conditional generator, labels) or .png (a picture)")
    s.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    s.add_argument("--label", default=None,
                   help="conditional generators: the class to make, by index or name "
                        "(default: the samples spread evenly over the classes, a .png shows "
                        "one row per class)")
    s.add_argument("--truncation", type=float, default=None, metavar="T",
                   help=TRUNCATION_HELP)
    s.add_argument("--tracking-uri", default="",
                   help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, then ./mlflow.db)")
    e = sub.add_parser("evaluate", help="quality figures of a trained generator, as JSON")
    e.add_argument("--model", required=True,
                   help="a .keras file, an MLflow run id, or an MLflow model URI")
    e.add_argument("--n", type=int, default=10_000,
                   help="generated samples (values, for 1-D) to judge (default 10000)")
    e.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    e.add_argument("--config", default="",
                   help="pipeline file describing the data (default: the run's own settings, "
                        "else MNIST for images and N(4, 1.25) for 1-D)")
    e.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a data setting, e.g. data.dataset=fashion_mnist")
    e.add_argument("--truncation", type=float, default=None, metavar="T",
                   help=TRUNCATION_HELP)
    e.add_argument("--tracking-uri", default="", help="MLflow tracking URI")

    v = sub.add_parser("server", help="an MLflow tracking server over a store folder (make server)")
    v.add_argument("--store", default=".", help="folder holding mlflow.db and mlruns/ (default .)")
    v.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    v.add_argument("--port", type=int, default=5000, help="port (default 5000)")
    v.add_argument("--workers", type=int, default=None, help="server worker processes")
    v.add_argument("--auth", action="store_true",
                   help="MLflow's basic auth: the admin from MLFLOW_AUTH_ADMIN_USERNAME / "
                        "MLFLOW_AUTH_ADMIN_PASSWORD, clients log in with "
                        "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD")
    return p


def run_pipeline(args) -> None:
    from gan_pipeline import config
    from gan_pipeline.pipeline.runner import Pipeline

    cfg = config.load(args.pipeline, args.overrides)
    sets = "".join(f" --set {shlex.quote(o)}" for o in args.overrides)
    Pipeline(cfg, command=f"gan-pipeline run {shlex.quote(args.pipeline)}{sets}").run(
        only=args.only, force=args.force)


def run_train(args) -> None:
    from gan_pipeline import config
    from gan_pipeline.run import train

    cfg = config.load(args.config, args.overrides)
    sets = "".join(f" --set {shlex.quote(o)}" for o in args.overrides)
    train(cfg, resume=args.resume,
          resume_command=f"gan-pipeline train --config {shlex.quote(args.config)}{sets} --resume")


def run_sample(args) -> None:
    from gan_pipeline import kinds, sampling

    sampling.check_out(args.out)
    generator = sampling.with_truncation(sampling.load_generator(args.model, args.tracking_uri),
                                         args.truncation)
    samples, labels = sampling.sample_with_labels(generator, args.n, seed=args.seed,
                                                  label=args.label)
    spec = kinds.spec_of(generator)
    out = sampling.write(samples, args.out, kinds.KINDS[spec["kind"]], labels,
                         spec["class_names"])
    made = ""
    if labels is not None:
        names = spec["class_names"]
        made = (f" of class {names[int(labels[0, 0])]!r}" if args.label is not None
                else f" spread over {len(names)} classes")
    print(f"Wrote {out}: {samples.shape[0]} samples{made} of shape {samples.shape[1:]}, "
          f"float32, range [{samples.min():.3f}, {samples.max():.3f}]")


def _evaluation_config(args, generator, run_id: str | None):
    """The settings that say what a generator is judged against: --config, else the run's own
    params, else the data settings saved inside the generator."""
    import mlflow

    from gan_pipeline import config, families, kinds

    if args.config:
        return config.load(args.config, args.overrides)
    if run_id:
        return config.from_params(mlflow.MlflowClient().get_run(run_id).data.params,
                                  args.overrides)
    spec = kinds.spec_of(generator)
    raw: dict = {"data": spec["data"]} if spec["data"] else {}
    if spec["family"] in families.FAMILIES:
        raw["model"] = {"name": spec["family"]}
    return config.validate(config.apply_overrides(raw, args.overrides))


def run_evaluate(args) -> None:
    import json

    from gan_pipeline import data, evaluation, sampling, tracking
    from gan_pipeline.errors import UserError

    if args.n < 50:
        raise UserError(f"--n {args.n} is too small: the k-NN and kernel metrics need at least 50 "
                        "samples (10000 is the standard)")
    # stdout is the JSON alone (`evaluate ... | jq`): notes and progress go to stderr
    with contextlib.redirect_stdout(sys.stderr):
        generator = sampling.load_generator(args.model, args.tracking_uri)
        run_id = sampling.run_id_of(args.model)
        cfg = _evaluation_config(args, generator, run_id)
        judge = data.open_source(cfg).evaluator(args.n, args.seed, cfg.eval.collapse_max_share)
        if args.truncation is not None:  # a what-if: its figures are printed, not logged
            generator, run_id = sampling.with_truncation(generator, args.truncation), None
        result = evaluation.report(judge, generator, args.model)
        if run_id:
            tracking.log_evaluation(run_id, result)
            result["logged_to_run"] = run_id
    print(json.dumps(result, indent=2))


def main(argv: list[str] | None = None) -> int:
    gc.disable()  # until the imports are done: see freeze_imports
    try:
        return _main(argv)
    finally:
        gc.enable()


def _main(argv: list[str] | None) -> int:
    args = parser().parse_args(argv)
    quiet_tensorflow()
    from gan_pipeline.errors import UserError

    try:
        if args.command == "server":  # no TensorFlow in the server's process
            from gan_pipeline import server

            server.serve(args.store, args.host, args.port, args.auth, args.workers)
        if os.environ.get("TF_CONFIG"):
            if args.command != "train":
                raise UserError(f"`gan-pipeline {args.command}` does not run under TF_CONFIG: "
                                "train multi-worker with `gan-pipeline train --config FILE` on "
                                "every worker, then run the other stages on one machine without "
                                "TF_CONFIG (docs/scale.md)")
            from gan_pipeline import distribute

            distribute.collective_timeout()  # a bad setting is an error even if set up before
            distribute.strategy()  # collective ops must be set up before any other TF work
    except UserError as exc:
        print(f"gan-pipeline: error: {exc}", file=sys.stderr)
        return 2
    from gan_pipeline.run import TrainingStopped

    freeze_imports()
    try:
        {"run": run_pipeline, "train": run_train, "sample": run_sample,
         "evaluate": run_evaluate}[args.command](args)
    except UserError as exc:
        print(f"gan-pipeline: error: {exc}", file=sys.stderr)
        return 2
    except TrainingStopped as exc:
        print(f"gan-pipeline: {exc}", file=sys.stderr)
        if exc.reason == "worker lost":
            # Everything is recorded; TensorFlow's shutdown would wait on the broken cluster.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        return 130 if exc.reason == "interrupted" else 1
    except KeyboardInterrupt:  # outside training (which stops cleanly itself), e.g. a search
        print("gan-pipeline: interrupted. Run the same command again to continue: finished "
              "stages are reused and a search continues from its last finished trial.",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
