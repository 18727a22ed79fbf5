"""gan-pipeline: GAN training with TensorFlow/Keras, tracked in MLflow.

Where things live (README.md has the full map): ``gan`` (the ``GAN`` model and its
``train_step``), ``families`` (architectures), ``data`` (data sources), ``losses``, ``factory``
(``build_gan``), ``callbacks``, ``fitting`` and ``run`` (a training run), ``tuning``,
``pipeline`` (staged pipelines), ``evaluation`` and ``metrics``, ``tracking`` (MLflow),
``sampling``, ``kinds``, ``visualize``, ``config`` and ``cli`` (the ``gan-pipeline`` command).
"""

__version__ = "0.2.0"
