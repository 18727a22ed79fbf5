"""The generator as MLflow logs and serves it: an MLflow ``pyfunc`` model around the saved
``generator.keras``, with this package's code inside (its custom layers must be importable
wherever the model loads: ``mlflow models serve``, ``make serve``, ``mlflow.pyfunc.load_model``).

``predict`` takes ``{"z": (n, latent...)}`` float32 noise, plus ``"label": (n, 1)`` int32 for a
conditional generator, and returns the ``(n, *sample_shape)`` float32 samples in [-1, 1] (with
the truncation trick when the generator was saved with it).
"""

from __future__ import annotations

import mlflow
import numpy as np


class GeneratorService(mlflow.pyfunc.PythonModel):
    """``generator.keras`` behind MLflow's pyfunc interface."""

    # The logged model's signature (tensors z and label) is explicit; MLflow's validation by
    # the predict method's type hints does not apply (and would warn on every run).
    _skip_type_hint_validation = True

    def load_context(self, context):
        import keras

        from gan_pipeline import families  # noqa: F401 - registers the saved custom layers

        self.generator = keras.models.load_model(context.artifacts["generator"],
                                                 safe_mode=True, compile=False)

    def predict(self, context, model_input, params=None):
        conditional = len(self.generator.inputs) > 1
        if isinstance(model_input, dict):
            z = np.asarray(model_input["z"], np.float32)
            inputs = [z, np.asarray(model_input["label"], np.int32).reshape(-1, 1)] \
                if conditional else z
        else:  # one unnamed tensor: the noise of an unconditional generator
            inputs = np.asarray(model_input, np.float32)
        return np.asarray(self.generator.predict(inputs, verbose=0), np.float32)
