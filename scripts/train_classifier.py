"""Train the evaluation classifier that ships with gan-pipeline (`make classifier`).

    python scripts/train_classifier.py [--dataset mnist] [--data-dir DIR] [--out DIR]

For a dataset listed in `gan_pipeline.data.tfds_images.SHIPPED` (MNIST), prepared in
`$TFDS_DATA_DIR` (or `--data-dir`): trains the classifier exactly as a first evaluation would
(`gan_pipeline.evaluation.classifier._train`: seed 0, 3 epochs), measures its test accuracy,
refuses to write it below the table's minimum, and writes its weights (no optimizer state)
and metadata to `gan_pipeline/evaluation/shipped/` (or `--out`). Run it again only when the
classifier's architecture or training changes (bump `CLASSIFIER_VERSION` then): every Frechet
distance, precision and recall on MNIST is measured in these features (docs/quality.md).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--out", default="", help="default: gan_pipeline/evaluation/shipped/")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from gan_pipeline import config, data, distribute
    from gan_pipeline.data.tfds_images import SHIPPED
    from gan_pipeline.evaluation import classifier

    from gan_pipeline.errors import UserError

    repo = Path(__file__).resolve().parents[1]
    try:
        cfg = config.load(repo / "pipelines/mnist_dcgan.toml",
                          [f"data.dataset={args.dataset}", f"data.data_dir={args.data_dir}",
                           "data.download=false"])
        source = data.open_source(cfg)
    except UserError as exc:
        print(f"gan-pipeline: error: {exc}", file=sys.stderr)
        return 2
    version = str(source.builder.info.version)
    stem = source.shipped_name()
    if stem is None:
        sizes = {name: int(s.num_examples) for name, s in source.builder.info.splits.items()}
        print(f"gan-pipeline: error: no classifier ships for {args.dataset} {version} with "
              f"splits {sizes}; allowed: {', '.join(f'{n} {v}' for n, v in sorted(SHIPPED))} "
              "with their full splits (gan_pipeline.data.tfds_images.SHIPPED)", file=sys.stderr)
        return 2
    entry = SHIPPED[(args.dataset, version)]
    machine = distribute.cpu_description()
    out = Path(args.out) if args.out else classifier.SHIPPED_DIR
    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        trained = classifier._train(source, Path(tmp) / f"{stem}.keras", None, verbose=2)
        seconds = time.time() - started
        accuracy = trained.info["test_accuracy"]
        if accuracy < entry["min_accuracy"]:
            print(f"gan-pipeline: error: test accuracy {accuracy:.4f} is below "
                  f"{entry['min_accuracy']}: nothing written", file=sys.stderr)
            return 2
        target = classifier.export_shipped(
            trained, out, stem, trained_on=machine, trained_seconds=round(seconds, 1),
            trained_at=time.strftime("%Y-%m-%d"))
    print(f"{target}: test accuracy {accuracy:.4f}, {seconds:.0f} s on {machine}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
