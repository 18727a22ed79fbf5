"""``EpochLogger``: what MLflow shows of a run, epoch by epoch.

Each completed epoch logs the epoch's logs as metrics (losses, D's outputs, the quality figures
``eval/*`` when evaluated) plus ``train_seconds``, and a picture of a FIXED noise batch with
``mlflow.log_image(key=..., step=epoch)``, so the UI's step slider shows the evolution (image
GANs log ``samples``, one row per class for conditional ones, 1-D GANs ``histogram`` and the
moments of the fixed batch). At the end:
``loss_curves.png`` and, when the run was evaluated, ``report.png``. Nothing is logged for an
epoch that was cut short, nor twice for one logged before a kill that beat its checkpoint.
"""

from __future__ import annotations

import keras
import mlflow
import numpy as np

from gan_pipeline import kinds, visualize
from gan_pipeline.callbacks.record import RunRecord


class EpochLogger(keras.callbacks.Callback):
    def __init__(self, record: RunRecord, kind: kinds.Kind, fixed_noise: np.ndarray,
                 real_preview: np.ndarray, title: str = "", fixed_labels: np.ndarray | None = None,
                 class_names: list[str] | None = None):
        super().__init__()
        self.record, self.kind = record, kind
        self.fixed_noise, self.real_preview, self.title = fixed_noise, real_preview, title
        self.fixed_labels, self.class_names = fixed_labels, class_names
        self.logged_up_to = 0
        self.last_samples: np.ndarray | None = None

    def restore(self, run_id: str) -> None:
        """Continue a resumed run: its earlier metrics feed the end-of-run figures, and the
        steps it already logged are not logged again (a redone epoch computes the same)."""
        client = mlflow.MlflowClient()
        for key in client.get_run(run_id).data.metrics:
            history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
            self.record.history[key] = [m.value for m in history]
            if key == "eval_seconds":
                self.record.eval_steps = [m.step for m in history]
            if key == "d_loss":
                self.logged_up_to = max(m.step for m in history)

    def on_epoch_end(self, epoch, logs=None):
        step = epoch + 1  # MLflow step = number of epochs done
        if not self.record.epoch_complete(epoch) or step <= self.logged_up_to:
            return
        metrics = {k: float(v) for k, v in (logs or {}).items()}
        metrics["train_seconds"] = self.record.train_seconds
        inputs = (self.fixed_noise if self.fixed_labels is None
                  else [self.fixed_noise, self.fixed_labels])
        samples = keras.ops.convert_to_numpy(
            self.model.sampler(inputs, training=False)).astype(np.float32)
        self.last_samples = samples
        metrics.update(self.kind.summary(samples))
        picture = self.kind.picture(samples, title=f"{self.title} epoch {step}",
                                    real=self.real_preview, noise=self.fixed_noise,
                                    labels=self.fixed_labels, class_names=self.class_names)
        mlflow.log_image(picture, key=self.kind.picture_key, step=step)
        if self.record.collapse.startswith(f"epoch {step}:"):
            mlflow.set_tag("collapse_warning", self.record.collapse)
        mlflow.log_metrics(metrics, step=step)
        for key, value in metrics.items():
            self.record.history.setdefault(key, []).append(value)

    def on_train_end(self, logs=None):
        if self.record.completed != (self.record.epochs or self.params.get("epochs")):
            return
        if self.record.history:
            fig = visualize.loss_figure(self.record.history, title=self.title)
            mlflow.log_figure(fig, "loss_curves.png")
            visualize.close(fig)
        if self.record.last_eval is not None and self.last_samples is not None:
            curves = {k.removeprefix("eval/"): v for k, v in self.record.history.items()
                      if k.startswith("eval/")}
            fig = self.kind.report(self.real_preview, self.last_samples, self.record.eval_steps,
                                   curves, self.record.last_eval, title=self.title)
            mlflow.log_figure(fig, "report.png")
            visualize.close(fig)
