"""TensorBoard event files written with the `tensorboard` package's own record writer and
protocol buffers. Writers built on TensorFlow's summary API (clu's among them) import
TensorFlow, about 10 s in every process that logs a scalar; this imports neither TensorFlow nor
PyTorch, and TensorBoard reads its files as it reads theirs."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping


def available() -> bool:
    """Whether the `tensorboard` package (in the `tfds` extra) is installed."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


class EventFile:
    """One `events.out.tfevents.*` file in `logdir`: scalars and PNG images by step."""

    def __init__(self, logdir: str):
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event, self._summary = event_pb2.Event, summary_pb2.Summary
        os.makedirs(logdir, exist_ok=True)
        # TensorBoard's naming: time and host order the files of one directory.
        name = f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}.{os.getpid()}"
        self._records = RecordWriter(open(os.path.join(logdir, name), "wb"))  # noqa: SIM115
        self._write(self._event(wall_time=time.time(), file_version="brain.Event:2"))

    def _write(self, event) -> None:
        self._records.write(event.SerializeToString())
        self._records.flush()  # a killed run keeps every scalar it logged

    def write_scalars(self, step: int, scalars: Mapping[str, float]) -> None:
        values = [self._summary.Value(tag=k, simple_value=float(v)) for k, v in scalars.items()]
        summary = self._summary(value=values)
        self._write(self._event(wall_time=time.time(), step=int(step), summary=summary))

    def write_png(self, step: int, tag: str, path: str) -> None:
        """A PNG file as an image, its bytes as they are (TensorBoard decodes them itself)."""
        from PIL import Image

        with Image.open(path) as image:  # reads the header only
            (width, height), bands = image.size, len(image.getbands())
        with open(path, "rb") as f:
            png = f.read()
        # colorspace is the band count: 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA
        image = self._summary.Image(
            height=height, width=width, colorspace=bands, encoded_image_string=png
        )
        summary = self._summary(value=[self._summary.Value(tag=tag, image=image)])
        self._write(self._event(wall_time=time.time(), step=int(step), summary=summary))

    def close(self) -> None:
        self._records.close()
