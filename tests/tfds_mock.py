"""tfds's `mock_data` for the streamed datasets, without its process-wide file-system patch.

`mock_data` wraps every `as_dataset` in `MockFs` only so that the builder's data_dir seems to
exist. `MockFs` redirects `tf.io.gfile` and `epath` for the whole process into a temporary root
while it is active, and streaming calls `as_dataset` at every epoch (the next one in a thread of
its own) and every evaluation: whatever another thread read or wrote through them in that window
(tfds's own label files, orbax's asynchronous checkpoint writes) went to the temporary root and
failed with FileNotFoundError. Here the data_dir is the test's own temporary directory, so the
file `MockFs` would fake is simply written there.
"""

from __future__ import annotations

import contextlib
import pathlib
from collections.abc import Iterator
from unittest import mock

import tensorflow_datasets as tfds
from tensorflow_datasets.testing import test_utils


class RealFs:
    """`MockFs`'s interface, on the real file system."""

    def __enter__(self) -> RealFs:
        return self

    def __exit__(self, *exc_info) -> None:
        return None

    def add_file(self, path: str, content: str | None = None) -> None:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content or "")


@contextlib.contextmanager
def mock_streamed_data(data_dir: str, num_examples: int) -> Iterator[None]:
    """`tfds.testing.mock_data(num_examples)` whose builders live in `data_dir` (a temporary
    directory: a marker file is written there)."""
    with (
        mock.patch.object(test_utils, "MockFs", RealFs),
        tfds.testing.mock_data(num_examples=num_examples, data_dir=data_dir),
    ):
        yield
