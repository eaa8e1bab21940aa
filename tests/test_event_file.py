"""TensorBoard event files: what `EventFile` writes, read back by TensorFlow's own record reader
(which checks every record's CRC), and written without importing TensorFlow."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")
event_pb2 = pytest.importorskip("tensorboard.compat.proto.event_pb2")

from flaxcls.rundir.event_file import EventFile  # noqa: E402
from flaxcls.testing.launch import ROOT  # noqa: E402


def _events(logdir):
    (name,) = os.listdir(logdir)
    assert name.startswith("events.out.tfevents.")
    records = tf.data.TFRecordDataset(os.path.join(logdir, name))
    return [event_pb2.Event.FromString(r.numpy()) for r in records]


def test_scalars_and_a_png_read_back_as_written(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "picture.png")
    writer = EventFile(str(tmp_path / "tb"))
    writer.write_scalars(3, {"loss": 0.5, "accuracy": 0.25})
    writer.write_png(7, "eval_test/picture", str(tmp_path / "picture.png"))
    writer.close()
    header, scalars, image = _events(str(tmp_path / "tb"))
    assert header.file_version == "brain.Event:2"
    assert scalars.step == 3
    assert {v.tag: v.simple_value for v in scalars.summary.value} == {"loss": 0.5, "accuracy": 0.25}
    (value,) = image.summary.value
    assert image.step == 7 and value.tag == "eval_test/picture"
    assert (value.image.height, value.image.width, value.image.colorspace) == (5, 7, 3)
    decoded = tf.io.decode_png(value.image.encoded_image_string).numpy()
    np.testing.assert_array_equal(decoded, pixels)


def test_logging_a_run_does_not_import_tensorflow(tmp_path):
    code = (
        "import sys\n"
        "from flaxcls.rundir.writers import MetricsLog\n"
        f"log = MetricsLog({str(tmp_path)!r})\n"
        "log.write_scalars(1, {'loss': 1.0})\n"
        "log.close()\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(_events(str(tmp_path / "tensorboard"))) == 2
