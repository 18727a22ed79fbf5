"""`make serve MODEL=<model URI>` answers real HTTP requests: the logged generator, served by
`mlflow models serve` in the project's environment, turns posted z (and labels, conditional)
into samples of the right shape and range, the same as the generator itself."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import tensorflow as tf
import tensorflow_datasets as tfds

from gan_pipeline import sampling
from tests.helpers import REPO, TempWorkdir, free_port
from tests.test_cli import only_run, run_cli, tiny_overrides


class Served:
    """``make serve`` on a free port, for as long as the block runs."""

    def __init__(self, work, model_uri):
        self.work, self.port = work, free_port()
        venv = Path(sys.executable).parent.parent
        self.log = open(work.path / "serve.log", "w")
        self.proc = subprocess.Popen(
            ["make", "-s", "-o", "install", "-C", str(REPO), "serve", f"MODEL={model_uri}",
             f"VENV={venv}", f"SERVE_PORT={self.port}"],
            env={**os.environ, "MLFLOW_TRACKING_URI": work.uri, "CUDA_VISIBLE_DEVICES": ""},
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        deadline = time.time() + 600  # a hang turns into a failure; loading TF takes a while
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("make serve exited:\n"
                                     + (self.work.path / "serve.log").read_text()[-3000:])
            try:
                if requests.get(f"{self.url}/ping", timeout=2).status_code == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(1)
        raise AssertionError("the model server did not answer in time")

    def __exit__(self, *exc):
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.log.close()

    def invoke(self, inputs: dict):
        answer = requests.post(f"{self.url}/invocations", timeout=120,
                               data=json.dumps({"inputs": inputs}),
                               headers={"Content-Type": "application/json"})
        assert answer.status_code == 200, answer.text[:2000]
        return np.asarray(answer.json()["predictions"], np.float32)


@pytest.mark.process
class ServeTest(tf.test.TestCase):
    def test_make_serve_answers_z_and_labels_with_samples(self):
        for pipeline, family, sets in (("mnist_dcgan", "dcgan", ["model.truncation=1.0"]),
                                       ("mnist_cgan", "cdcgan", [])):
            with self.subTest(family=family), TempWorkdir() as work, \
                    tfds.testing.mock_data(num_examples=64):
                code, _, err = run_cli("train", "--config", REPO / f"pipelines/{pipeline}.toml",
                                       "--set", "eval.every_epochs=0",
                                       *(a for s in sets for a in ("--set", s)),
                                       *tiny_overrides(family, epochs=1))
                self.assertEqual(code, 0, err)
                _, run = only_run(work.uri, pipeline)
                model_uri = run.data.tags["generator_model_uri"]
                z = sampling.noise((5, 8), "normal", 7)
                inputs = {"z": z.tolist()}
                if family == "cdcgan":
                    labels = np.array([[0], [3], [7], [9], [3]], np.int32)
                    inputs["label"] = labels.tolist()
                with Served(work, model_uri) as server:
                    samples = server.invoke(inputs)
                self.assertEqual(samples.shape, (5, 28, 28, 1))
                self.assertAllInRange(samples, -1.0, 1.0)
                generator = sampling.load_generator(model_uri)
                local = generator([z, labels] if family == "cdcgan" else z, training=False)
                self.assertAllClose(samples, local, atol=1e-5)
