"""The ImageNet input pipeline on the host: flaxcls's tf.data stream vs torchvision's DataLoader.

  python benchmarks/imagenet_input.py [--data-dir /tmp/flaxcls_imagenet_synth]
      [--train-images 3000] [--val-images 1000] [--classes 100] [--seconds 20]
      [--batch-size 128] [--processes 1 2] [--pipelines ...]

First writes a synthetic ImageNet into --data-dir (never inside the repository; reused while its
parameters match): JPEGs at quality 90 with ImageNet's spread of sizes and aspect ratios (about
400x350 on average), smooth random colour fields plus texture and noise, so that decoding costs
what a photograph of that size costs. They are packed the way ILSVRC2012's archives are and
prepared by tfds's own `imagenet2012` builder (16 training shards), so flaxcls reads them
exactly as it reads the real dataset (`--config.data.data_dir=DIR/tfds`), and torchvision reads
the same files from class folders.

Then, for each pipeline and process count, each process builds its pipeline, warms up, and all
of them count images for --seconds together:

- flaxcls_train: `build_input(...).train(0)` of configs/imagenet_resnet50.py's data config:
  decode the crop window, inception crop, flip, resize to 224, round to uint8, batch, prefetch
  (the training step normalises on the device); with 2 processes each reads its own share.
- flaxcls_eval: `evaluate("test")`: shorter side to 256, central 224 crop, padded batches.
- torch_train / torch_eval: `DataLoader(ImageFolder(...))` with PIL, RandomResizedCrop(224) +
  RandomHorizontalFlip + PILToTensor / Resize(256) + CenterCrop(224) + PILToTensor: uint8
  batches too, normalised on the device as timm's prefetcher does; num_workers = cores /
  processes; with 2 processes each reads a DistributedSampler share.
- tf_decode / tf_decode_crop: the same records through tf.data, decoding only (the whole image /
  the inception crop window), no resize or batching: the ceiling that JPEG decoding sets.

Prints a table (pipeline, processes, images/s, images/s per core, ratio to torchvision) and
writes benchmarks/results/imagenet_input.json unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable, Iterator

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import machine, versions, write_json  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "imagenet_input.json")
DEFAULT_DATA_DIR = "/tmp/flaxcls_imagenet_synth"
TRAIN_SHARDS = 16  # ImageNet's 1,024 shards scaled down: enough files to interleave and split
IMAGE_SIZE, EVAL_RESIZE = 224, 256


def _cores() -> int:
    return len(os.sched_getaffinity(0))


# --- The synthetic dataset --------------------------------------------------------------------


def synthetic_jpeg(rng: np.random.Generator) -> bytes:
    """One quality-90 JPEG of an ImageNet-like size: mostly 4:3 landscapes, some portraits and
    squares, sides spread around 400x350; smooth colour fields, texture and noise."""
    from PIL import Image

    width = int(np.clip(rng.lognormal(np.log(390), 0.25), 120, 1200))
    aspects = [4 / 3, 3 / 4, 1.0, 3 / 2, rng.uniform(0.5, 2.0)]
    aspect = rng.choice(aspects, p=[0.5, 0.15, 0.1, 0.1, 0.15])
    height = int(np.clip(width / aspect, 100, 1200))
    size = (width, height)
    base = rng.integers(0, 256, (rng.integers(2, 7), rng.integers(2, 7), 3), dtype=np.uint8)
    image = np.asarray(Image.fromarray(base).resize(size, Image.BICUBIC), np.int16)
    texture = rng.integers(78, 179, (max(height // 12, 2), max(width // 12, 2), 3), dtype=np.uint8)
    image = image + np.asarray(Image.fromarray(texture).resize(size, Image.BILINEAR), np.int16)
    image = image - 128 + rng.integers(-28, 29, (height, width, 3), dtype=np.int16)
    out = io.BytesIO()
    Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(out, "JPEG", quality=90)
    return out.getvalue()


def _synsets(classes: int) -> list[str]:
    import tensorflow_datasets as tfds

    with open(tfds.core.tfds_path("datasets/imagenet2012/labels.txt"), encoding="utf-8") as f:
        names = f.read().split()
    return names[:: len(names) // classes][:classes]


def _validation_labels() -> list[str]:
    import tensorflow_datasets as tfds

    path = tfds.core.tfds_path("datasets/imagenet2012/validation_labels.txt")
    with open(path, encoding="utf-8") as f:
        return f.read().split()


def _write_jpeg(job: tuple[str, int]) -> int:
    """Writes image number `index` (its own seed, so any number of workers writes the same)."""
    path, index = job
    data = synthetic_jpeg(np.random.default_rng([0, index]))
    with open(path, "wb") as f:
        f.write(data)
    return len(data)


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    member = tarfile.TarInfo(name)
    member.size = len(data)
    tar.addfile(member, io.BytesIO(data))


def _train_files(jpeg_dir: str) -> int:
    train = os.path.join(jpeg_dir, "train")
    return sum(len(os.listdir(os.path.join(train, synset))) for synset in os.listdir(train))


def _add_copies(paths: list[str], copies: int) -> None:
    """Hard links `<name>_copy<k>.JPEG` beside each training JPEG, k = 1 .. copies - 1."""
    for path in paths:
        stem, ext = os.path.splitext(path)
        for k in range(1, copies):
            os.link(path, f"{stem}_copy{k}{ext}")


def _pack_train(jpeg_dir: str, archive: str) -> None:
    """ILSVRC2012_img_train.tar: one tar per synset, each holding that class's JPEGs (a hard
    link's bytes too: tfds's reader would skip a tar link member)."""
    with tarfile.open(archive, "w") as outer:
        for synset in sorted(os.listdir(jpeg_dir)):
            inner = io.BytesIO()
            with tarfile.open(fileobj=inner, mode="w") as tar:
                for name in sorted(os.listdir(os.path.join(jpeg_dir, synset))):
                    with open(os.path.join(jpeg_dir, synset, name), "rb") as f:
                        _add_bytes(tar, name, f.read())
            _add_bytes(outer, f"{synset}.tar", inner.getvalue())


def _pack_val(jpeg_dir: str, archive: str) -> None:
    """ILSVRC2012_img_val.tar: flat; tfds takes labels from the sorted file names."""
    with tarfile.open(archive, "w") as tar:
        for synset in sorted(os.listdir(jpeg_dir)):
            for name in sorted(os.listdir(os.path.join(jpeg_dir, synset))):
                tar.add(os.path.join(jpeg_dir, synset, name), arcname=name)


def prepare_data(
    data_dir: str, train_images: int, val_images: int, classes: int, copies: int
) -> dict:
    """Writes the JPEGs (class folders) and a prepared tfds `imagenet2012`; returns their facts.
    Reuses what an earlier call with the same parameters wrote.

    Each training JPEG enters the training split `copies` times (hard links, decoded anew each
    time), so that an epoch, whose pipeline flaxcls builds afresh, is long enough for its
    start-up to weigh about as little as on ImageNet's 1.28 million images."""
    params = {
        "train_images": train_images,
        "val_images": val_images,
        "classes": classes,
        "copies": copies,
    }
    facts_path = os.path.join(data_dir, "facts.json")
    if os.path.exists(facts_path):
        with open(facts_path, encoding="utf-8") as f:
            facts = json.load(f)
        if facts["params"] == params and _train_files(facts["jpeg_dir"]) == train_images * copies:
            return facts
    if os.path.realpath(data_dir).startswith(os.path.realpath(ROOT) + os.sep):
        raise SystemExit(f"--data-dir {data_dir} is inside the repository; choose another place.")
    shutil.rmtree(data_dir, ignore_errors=True)
    start = time.perf_counter()
    jpeg_dir = os.path.join(data_dir, "jpeg")
    paths = _jpeg_paths(jpeg_dir, train_images, val_images, classes)
    for folder in {os.path.dirname(p) for p in paths}:
        os.makedirs(folder, exist_ok=True)
    with concurrent.futures.ProcessPoolExecutor(_cores()) as pool:
        sizes = list(
            pool.map(_write_jpeg, zip(paths, range(len(paths)), strict=True), chunksize=64)
        )
    _add_copies([p for p in paths if f"{os.sep}train{os.sep}" in p], copies)
    generated = time.perf_counter() - start
    _prepare_tfds(jpeg_dir, data_dir)
    facts = {
        "params": params,
        **_image_facts(paths, sizes),
        "train_records": train_images * copies,
        "tfds_data_dir": os.path.join(data_dir, "tfds"),
        "jpeg_dir": jpeg_dir,
        "seconds_to_generate": generated,
        "seconds_to_prepare": time.perf_counter() - start,
    }
    with open(facts_path, "w", encoding="utf-8") as f:
        json.dump(facts, f, indent=2)
    return facts


def _jpeg_paths(jpeg_dir: str, train_images: int, val_images: int, classes: int) -> list[str]:
    """Training JPEGs in class folders, then validation JPEGs under their real labels."""
    paths = []
    for c, synset in enumerate(_synsets(classes)):
        count = train_images // classes + (c < train_images % classes)
        paths += [
            os.path.join(jpeg_dir, "train", synset, f"{synset}_{i}.JPEG") for i in range(count)
        ]
    labels = _validation_labels()  # the real labels of the first validation file names
    for k in range(val_images):
        paths.append(os.path.join(jpeg_dir, "val", labels[k], f"ILSVRC2012_val_{k + 1:08d}.JPEG"))
    return paths


def _prepare_tfds(jpeg_dir: str, data_dir: str) -> None:
    """tfds's own `imagenet2012` builder, fed archives laid out as image-net.org's."""
    import tensorflow_datasets as tfds

    tfds.disable_progress_bar()
    manual = os.path.join(data_dir, "manual")
    os.makedirs(manual)
    _pack_train(os.path.join(jpeg_dir, "train"), os.path.join(manual, "ILSVRC2012_img_train.tar"))
    _pack_val(os.path.join(jpeg_dir, "val"), os.path.join(manual, "ILSVRC2012_img_val.tar"))
    builder = tfds.builder("imagenet2012", data_dir=os.path.join(data_dir, "tfds"))
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(
            manual_dir=manual, num_shards=TRAIN_SHARDS, try_download_gcs=False
        )
    )
    shutil.rmtree(manual)  # the archives only feed tfds's builder


def _image_facts(paths: list[str], sizes: list[int]) -> dict:
    from PIL import Image

    widths, heights = np.array([Image.open(path).size for path in paths]).T
    return {
        "mean_width": float(widths.mean()),
        "mean_height": float(heights.mean()),
        "min_side": int(np.minimum(widths, heights).min()),
        "max_side": int(np.maximum(widths, heights).max()),
        "mean_aspect_w_over_h": float((widths / heights).mean()),
        "mean_jpeg_bytes": float(np.mean(sizes)),
        "bits_per_pixel": float(8 * np.sum(sizes) / np.sum(widths * heights)),
        "jpeg_quality": 90,
    }


# --- The pipelines, each a function (facts, args, process index, process count) -> batches ----

Batches = Iterator[int]  # images in each batch as it arrives


def _flaxcls_input(facts: dict, args: argparse.Namespace, index: int, count: int):
    from configs import imagenet_resnet50
    from flaxcls.data import build_input

    config = imagenet_resnet50.get_config()
    config.data.data_dir = facts["tfds_data_dir"]
    return build_input(
        config.data,
        global_batch_size=args.batch_size * count,
        eval_batch_size=args.batch_size * count,
        seed=0,
        process_index=index,
        process_count=count,
    )


def flaxcls_train(facts: dict, args: argparse.Namespace, index: int, count: int) -> Batches:
    for batch in _flaxcls_input(facts, args, index, count).train(0):
        yield len(batch["label"])


def flaxcls_eval(facts: dict, args: argparse.Namespace, index: int, count: int) -> Batches:
    data = _flaxcls_input(facts, args, index, count)
    while True:  # evaluation passes one after another, as many as the time allows
        for batch in data.evaluate("test"):
            yield int(batch["mask"].sum())


def _tf_decode(crop: bool, facts: dict, args: argparse.Namespace, index: int, count: int):
    """The training records through tf.data's parallel map, decoded (the whole image, or only
    the inception crop window) and nothing else: the ceiling that JPEG decoding sets."""
    import tensorflow as tf
    import tensorflow_datasets as tfds

    from flaxcls.data import streaming

    builder = tfds.builder("imagenet2012", data_dir=facts["tfds_data_dir"])
    split = tfds.even_splits("train", n=count, drop_remainder=True)[index]
    ds = streaming._read(builder, split, file_seed=0).repeat()

    def decode(example):
        if crop:
            shape = tf.io.extract_jpeg_shape(example["image"])
            begin, size, _ = tf.image.sample_distorted_bounding_box(
                shape,
                tf.zeros([0, 0, 4], tf.float32),
                area_range=(0.08, 1.0),
                aspect_ratio_range=(3 / 4, 4 / 3),
                min_object_covered=0.0,
                use_image_if_no_bounding_boxes=True,
            )
            window = tf.stack([begin[0], begin[1], size[0], size[1]])
            image = tf.io.decode_and_crop_jpeg(example["image"], window, channels=3)
        else:
            image = tf.io.decode_jpeg(example["image"], channels=3)
        return tf.shape(image)

    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=False)
    for shapes in ds.batch(args.batch_size).prefetch(2).as_numpy_iterator():
        yield len(shapes)


def tf_decode(facts: dict, args: argparse.Namespace, index: int, count: int) -> Batches:
    return _tf_decode(False, facts, args, index, count)


def tf_decode_crop(facts: dict, args: argparse.Namespace, index: int, count: int) -> Batches:
    return _tf_decode(True, facts, args, index, count)


def import_torchvision():
    """torchvision, whose transforms used here are plain Python on PIL.

    The only torchvision 0.28 wheel on PyPI is built against CUDA torch; beside the CPU torch
    its C++ operators do not load, and its import then stops registering fake kernels for two
    of them (nms, qnms). Declaring their schemas first lets the import through; nothing here
    calls them."""
    import torch

    try:
        import torchvision
    except RuntimeError:
        for op in ("nms", "qnms"):
            torch.library.define(
                f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
            )
        import torchvision
    return torchvision


def _torch_batches(folder: str, transform, args: argparse.Namespace, index: int, count: int):
    import torch.utils.data

    import_torchvision()
    from torchvision import datasets

    dataset = datasets.ImageFolder(folder, transform=transform)
    sampler = torch.utils.data.DistributedSampler(dataset, num_replicas=count, rank=index)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch_size,
        sampler=sampler,
        num_workers=max(_cores() // count, 1),
        persistent_workers=True,
        drop_last=False,
    )
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        for images, _ in loader:
            yield len(images)
        epoch += 1


def torch_train(facts: dict, args: argparse.Namespace, index: int, count: int) -> Batches:
    T = import_torchvision().transforms  # noqa: N806
    transform = T.Compose(
        [T.RandomResizedCrop(IMAGE_SIZE), T.RandomHorizontalFlip(), T.PILToTensor()]
    )
    return _torch_batches(os.path.join(facts["jpeg_dir"], "train"), transform, args, index, count)


def torch_eval(facts: dict, args: argparse.Namespace, index: int, count: int) -> Batches:
    T = import_torchvision().transforms  # noqa: N806
    transform = T.Compose([T.Resize(EVAL_RESIZE), T.CenterCrop(IMAGE_SIZE), T.PILToTensor()])
    return _torch_batches(os.path.join(facts["jpeg_dir"], "val"), transform, args, index, count)


def _image_size(image):
    import torch

    return torch.tensor(image.size)


def torch_decode(facts: dict, args: argparse.Namespace, index: int, count: int) -> Batches:
    """PIL's decoding alone (ImageFolder's loader: open, convert to RGB), for the profile."""
    folder = os.path.join(facts["jpeg_dir"], "train")
    return _torch_batches(folder, _image_size, args, index, count)


# name -> (batches, the torchvision pipeline it is compared with, or "")
PIPELINES: dict[str, tuple[Callable[..., Batches], str]] = {
    "flaxcls_train": (flaxcls_train, "torch_train"),
    "torch_train": (torch_train, ""),
    "flaxcls_eval": (flaxcls_eval, "torch_eval"),
    "torch_eval": (torch_eval, ""),
    "tf_decode": (tf_decode, "torch_decode"),
    "tf_decode_crop": (tf_decode_crop, "torch_decode"),
    "torch_decode": (torch_decode, ""),
}


# --- Measuring: every process warms up, then all count images over the same window -----------


def _tree_cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds used by process `pid` (this one by default) and all its descendants (the
    DataLoader's workers), from /proc."""
    pid = pid or os.getpid()
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        seconds = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        children = []
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children", encoding="utf-8") as f:
                children += [int(c) for c in f.read().split()]
    except (FileNotFoundError, ProcessLookupError):
        return 0.0  # a worker that ended meanwhile
    return seconds + sum(_tree_cpu_seconds(child) for child in children)


def worker(args: argparse.Namespace) -> None:
    """One process of one pipeline: warm up, say READY, wait for GO, count, print the count."""
    with open(args.facts, encoding="utf-8") as f:
        facts = json.load(f)
    batches = PIPELINES[args.worker][0](facts, args, args.process_index, args.process_count)
    for _ in range(args.warmup_batches):
        next(batches)
    print("READY", flush=True)
    sys.stdin.readline()
    images, start, cpu = 0, time.perf_counter(), _tree_cpu_seconds()
    while time.perf_counter() - start < args.seconds:
        images += next(batches)
    elapsed, cpu = time.perf_counter() - start, _tree_cpu_seconds() - cpu
    print(json.dumps({"images": images, "seconds": elapsed, "cpu_seconds": cpu}), flush=True)
    os._exit(0)  # background pipeline threads and loader workers need no orderly shutdown


def measure(name: str, processes: int, args: argparse.Namespace, facts_path: str) -> dict:
    """Images/s of `processes` processes of pipeline `name`, counted over the same window."""
    command = [sys.executable, os.path.abspath(__file__), "--worker", name]
    command += ["--facts", facts_path, "--process-count", str(processes)]
    command += ["--batch-size", str(args.batch_size), "--seconds", str(args.seconds)]
    command += ["--warmup-batches", str(args.warmup_batches)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    children = [
        subprocess.Popen(
            [*command, "--process-index", str(i)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(processes)
    ]
    for child in children:
        line = child.stdout.readline()
        if line.strip() != "READY":
            raise RuntimeError(f"{name}: a worker failed before measuring ({line!r}).")
    for child in children:
        child.stdin.write("GO\n")
        child.stdin.flush()
    counts = [json.loads(child.stdout.readline()) for child in children]
    for child in children:
        child.wait()
    rate = sum(c["images"] / c["seconds"] for c in counts)
    cores = _cores()
    return {
        "pipeline": name,
        "processes": processes,
        "images_per_sec": rate,
        "images_per_sec_per_core": rate / cores,
        # Robust to other work on the machine: the images per second of CPU time it used.
        "images_per_cpu_second": sum(c["images"] for c in counts)
        / sum(c["cpu_seconds"] for c in counts),
        "cores_busy": sum(c["cpu_seconds"] / c["seconds"] for c in counts),
        "cores": cores,
        "per_process": counts,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, help="synthetic data goes here")
    parser.add_argument("--train-images", type=int, default=3000)
    parser.add_argument("--val-images", type=int, default=1000)
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--copies", type=int, default=4, help="records per training JPEG")
    parser.add_argument("--batch-size", type=int, default=128, help="per process")
    parser.add_argument("--seconds", type=float, default=20.0, help="counting window per row")
    parser.add_argument("--warmup-batches", type=int, default=3)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--pipelines", nargs="+", default=list(PIPELINES), choices=PIPELINES)
    parser.add_argument("--out", default=DEFAULT_OUT)
    # One measuring process (internal).
    parser.add_argument("--worker", choices=PIPELINES, help=argparse.SUPPRESS)
    parser.add_argument("--facts", help=argparse.SUPPRESS)
    parser.add_argument("--process-index", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--process-count", type=int, default=1, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        worker(args)
        return
    facts = prepare_data(
        args.data_dir, args.train_images, args.val_images, args.classes, args.copies
    )
    facts_path = os.path.join(args.data_dir, "facts.json")
    rows = []
    for name in args.pipelines:
        for processes in args.processes:
            row = measure(name, processes, args, facts_path)
            print(
                f"{name:<15} {processes} process(es): {row['images_per_sec']:8.1f} images/s",
                flush=True,
            )
            rows.append(row)
    by_key = {(r["pipeline"], r["processes"]): r for r in rows}
    for row in rows:
        reference = by_key.get((PIPELINES[row["pipeline"]][1], row["processes"]))
        if reference:
            row["vs_torchvision"] = row["images_per_sec"] / reference["images_per_sec"]
            row["vs_torchvision_cpu"] = (
                row["images_per_cpu_second"] / reference["images_per_cpu_second"]
            )
    print_table(rows)
    write_json(
        args.out,
        {
            "benchmark": "imagenet_input",
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "machine": machine(),
            "versions": versions(
                ("tensorflow", "tensorflow-datasets", "torch", "torchvision", "pillow", "numpy")
            ),
            "settings": {k: v for k, v in vars(args).items() if v is not None},
            "data": facts,
            "results": rows,
        },
    )
    print(f"wrote {args.out}")


def print_table(rows: list[dict]) -> None:
    """Wall-clock figures, and per CPU second used: the per-core rate on a machine shared with
    other work, where wall-clock rates say as much about the neighbours."""
    print(
        f"\n{'pipeline':<15} {'processes':>9} {'images/s':>9} {'images/s/core':>14} "
        f"{'vs tv':>6} {'cores busy':>11} {'images/cpu-s':>13} {'vs tv':>6}"
    )
    for r in rows:
        ratio = f"{r['vs_torchvision']:.2f}x" if "vs_torchvision" in r else ""
        cpu_ratio = f"{r['vs_torchvision_cpu']:.2f}x" if "vs_torchvision_cpu" in r else ""
        print(
            f"{r['pipeline']:<15} {r['processes']:>9} {r['images_per_sec']:>9,.0f} "
            f"{r['images_per_sec_per_core']:>14,.0f} {ratio:>6} {r['cores_busy']:>11.2f} "
            f"{r['images_per_cpu_second']:>13,.0f} {cpu_ratio:>6}"
        )


if __name__ == "__main__":
    main()
