"""TensorFlow imported without Keras: the project uses tf.data, tf.io, tf.train.Example and tf.summary only.

TensorFlow's `__init__` imports `keras.src.optimizers` eagerly (to register Keras optimizers for loading
SavedModels), and with it all of Keras 3, scikit-learn and pandas: 1.2-2.4 s of every trainer, miner
and test process's start-up on a 2-core machine (measured: `import tensorflow` 5.0-6.6 s, 3.8-4.2 s
without), for nothing this project runs. TensorFlow skips that import when it raises ImportError, as it
does where Keras is not installed; a `None` entry in `sys.modules` makes it raise, for the duration of
TensorFlow's own import only, so `tf.keras` and `import keras` still work afterwards.
"""

from __future__ import annotations

import sys

_KERAS_EAGER_IMPORT = "keras.src.optimizers"


def import_tensorflow():
    """The `tensorflow` module (imported once, without its eager Keras import)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    blocked = _KERAS_EAGER_IMPORT not in sys.modules
    if blocked:
        sys.modules[_KERAS_EAGER_IMPORT] = None  # makes `import keras.src.optimizers` raise ImportError
    try:
        import tensorflow as tf
    finally:
        if blocked and sys.modules.get(_KERAS_EAGER_IMPORT, 0) is None:
            del sys.modules[_KERAS_EAGER_IMPORT]
    return tf
