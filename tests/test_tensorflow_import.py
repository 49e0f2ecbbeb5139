"""pipeline/tensorflow_import.py: TensorFlow without its eager Keras import, Keras still importable after."""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SCRIPT = """
import json, sys
from pipeline.tensorflow_import import import_tensorflow
tf = import_tensorflow()
loaded = {name: name in sys.modules for name in ("keras", "sklearn", "pandas")}
left = "keras.src.optimizers" in sys.modules
rows = list(tf.data.Dataset.range(3).map(lambda x: x * 2).as_numpy_iterator())
again = import_tensorflow() is tf
import keras
print(json.dumps({"loaded": loaded, "left": left, "rows": [int(r) for r in rows], "again": again,
                  "keras": keras.__version__ is not None, "tf_keras": tf.keras.layers.Dense.__name__}))
"""


def test_tensorflow_comes_without_keras_and_keras_still_imports():
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["loaded"] == {"keras": False, "sklearn": False, "pandas": False}
    assert got["left"] is False  # the block is lifted once TensorFlow is in
    assert got["rows"] == [0, 2, 4] and got["again"] is True
    assert got["keras"] is True and got["tf_keras"] == "Dense"
