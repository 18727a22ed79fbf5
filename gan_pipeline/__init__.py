"""gan-pipeline: GAN training with TensorFlow/Keras, tracked in MLflow.

Where things live: ``config`` (pipeline files), ``data`` (tf.data/TFDS), ``models`` (architectures),
``losses``, ``gan`` (the ``GAN`` model and its ``train_step``), ``train``, ``tracking`` (MLflow),
``sampling``, ``visualize`` and ``cli`` (the ``gan-pipeline`` command).
"""

__version__ = "0.1.0"
