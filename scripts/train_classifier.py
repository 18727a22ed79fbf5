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
import platform
import re
import sys
import tempfile
import time
from pathlib import Path


def cpu_flags() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor()
    model = re.search(r"model name\s*:\s*(.*)", text)
    flags = sorted(set(re.findall(r"\b(avx512_bf16|amx_bf16|avx512f|avx2|fma)\b", text)))
    return f"{model.group(1) if model else platform.processor()} ({', '.join(flags)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--data-dir", default="")
    parser.add_argument("--out", default="", help="default: gan_pipeline/evaluation/shipped/")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    from gan_pipeline import config, data
    from gan_pipeline.data.tfds_images import SHIPPED
    from gan_pipeline.evaluation import classifier

    repo = Path(__file__).resolve().parents[1]
    cfg = config.load(repo / "pipelines/mnist_dcgan.toml",
                      [f"data.dataset={args.dataset}", f"data.data_dir={args.data_dir}",
                       "data.download=false"])
    source = data.open_source(cfg)
    version = str(source.builder.info.version)
    entry = SHIPPED.get((args.dataset, version))
    sizes = {name: int(s.num_examples) for name, s in source.builder.info.splits.items()}
    if entry is None or any(sizes.get(k) != n for k, n in entry["splits"].items()):
        print(f"gan-pipeline: error: no classifier ships for {args.dataset} {version} with "
              f"splits {sizes}; SHIPPED lists {sorted(SHIPPED)}", file=sys.stderr)
        return 2
    stem = f"{args.dataset}-{version}-v{classifier.CLASSIFIER_VERSION}"
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
            trained, out, stem, trained_on=cpu_flags(), trained_seconds=round(seconds, 1),
            trained_at=time.strftime("%Y-%m-%d"))
    print(f"{target}: test accuracy {accuracy:.4f}, {seconds:.0f} s on {cpu_flags()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
