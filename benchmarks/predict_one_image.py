"""`run.py --mode=predict` on one image, for a run trained on an image folder: the run as it
stands on its own (state built from config.json, dataset.json and the checkpoint) against the
same run read the older way (its whole input built, every image of the folder decoded).

  python benchmarks/predict_one_image.py [--images 3000] [--repeats 3]

Writes a folder of PNGs made from the real Fashion-MNIST training images (96x96, ten class
folders) to a temporary directory, trains `seed_cnn` on it for a few steps, then times the
predict command, alternating the two ways `--repeats` times (the older way is the same run
with dataset.json moved aside). Prints a table and writes
benchmarks/results/predict_one_image.json unless --out says otherwise.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from common import machine, versions, write_json  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "predict_one_image.json")
FASHION = "/usr/share/datasets/fashion-mnist"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-path", default=FASHION)
    parser.add_argument("--out", default=DEFAULT_OUT)
    return parser.parse_args(argv)


def write_folder(root: str, data_path: str, count: int) -> None:
    from PIL import Image

    with gzip.open(os.path.join(data_path, "train-images-idx3-ubyte.gz")) as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(os.path.join(data_path, "train-labels-idx1-ubyte.gz")) as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    for i in range(count):
        folder = os.path.join(root, f"class_{labels[i]}")
        os.makedirs(folder, exist_ok=True)
        Image.fromarray(images[i]).resize((96, 96)).save(os.path.join(folder, f"{i}.png"))


def run_py(*args: str) -> float:
    start = time.perf_counter()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "JAX_PLATFORMS": "cpu"}
    subprocess.run(
        [sys.executable, "run.py", *args], cwd=ROOT, env=env, check=True, capture_output=True
    )
    return time.perf_counter() - start


def main(argv=None) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="predict_one_") as tmp:
        folder, workdir = os.path.join(tmp, "images"), os.path.join(tmp, "run")
        write_folder(folder, args.data_path, args.images)
        run_py(
            "--config=configs/folder.py",
            f"--workdir={workdir}",
            f"--config.data.path={folder}",
            "--config.data.image_size=28",
            "--config.model.name=seed_cnn",
            "--config.num_train_steps=4",
            "--config.progress_bar=False",
            "--config.compilation_cache_dir=",
        )
        image = os.path.join(
            folder, "class_0", sorted(os.listdir(os.path.join(folder, "class_0")))[0]
        )
        facts = os.path.join(workdir, "dataset.json")
        times: dict[str, list[float]] = {"standalone": [], "whole input": []}
        for _ in range(args.repeats):
            times["standalone"].append(run_py("--mode=predict", f"--workdir={workdir}", image))
            shutil.move(facts, facts + ".aside")
            times["whole input"].append(run_py("--mode=predict", f"--workdir={workdir}", image))
            shutil.move(facts + ".aside", facts)
    rows = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"\npredict one image, run trained on a folder of {args.images} PNGs (median of "
        f"{args.repeats}, whole command incl. Python start-up)"
    )
    for name, seconds in rows.items():
        print(f"  {name:12s} {seconds:6.2f} s")
    print(f"  speed-up     {rows['whole input'] / rows['standalone']:6.2f}x")
    write_json(
        args.out,
        {
            "benchmark": "predict_one_image",
            "command": "python benchmarks/predict_one_image.py " + " ".join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "settings": {"images": args.images, "repeats": args.repeats, "model": "seed_cnn"},
            "seconds": times,
            "median_s": rows,
            "speedup": rows["whole input"] / rows["standalone"],
            "load_average": os.getloadavg(),
            "machine": machine(),
            "versions": versions(("jax", "jaxlib", "flax", "orbax-checkpoint")),
        },
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
