"""Command line: a config file, its overrides and a workdir, handed to one function per mode.

  python run.py --config configs/fashion_mnist.py --workdir runs/fmnist [--config.num_epochs=1]
  python run.py --mode=evaluate --workdir runs/fmnist [--split=test] [--ensemble=RUN2,RUN3]
  python run.py --mode=export --workdir runs/fmnist [--format=onnx|tflite|all]
  python run.py --mode=predict --workdir runs/fmnist image.png photos/ [--top_k=5]

Restarting with the same workdir resumes from its latest checkpoint. Several processes (hosts)
run the same command with `--distributed` (TPU VM, SLURM) or with an explicit coordinator:
  python run.py --config ... --coordinator_address=10.0.0.1:1234 --num_processes=2 --process_id=0
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import os
import re
import sys
import tokenize
import traceback

from absl import app, flags, logging
from ml_collections import ConfigDict, config_flags

CONFIG_HELP = """\
Config fields: every field, with its default and a comment, is in configs/default.py
(the data.* fields in flaxcls/data/api.py); the other configs/*.py change a few of them.
Override any with --config.<key>=<value>. A config's resolved fields, with their comments
and defaults:
  python run.py --config configs/fashion_mnist.py --print_config [--config.num_epochs=3]
"""

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Path to a config file (configs/*.py).", lock_config=True
)
flags.DEFINE_string(
    "workdir", None, "Where checkpoints, metrics and results go. Default: runs/<config file name>."
)
flags.DEFINE_enum(
    "mode",
    "train",
    ["train", "evaluate", "export", "predict"],
    "train: train (resuming) and test. evaluate: metrics, pictures and RUN/report.html for a "
    "finished run's checkpoint, with the run's own config. export: ONNX and TFLite files under "
    "RUN/export/. predict: top-k classes of the image files and folders given as arguments.",
)
flags.DEFINE_enum("format", "all", ["onnx", "tflite", "all"], "export: which artefacts.")
flags.DEFINE_integer("top_k", 5, "predict: classes shown per image.")
flags.DEFINE_string("split", "test", "evaluate: the split (test, validation, train).")
flags.DEFINE_enum("checkpoint", "best", ["best", "latest"], "evaluate: which checkpoint.")
flags.DEFINE_list(
    "ensemble", [], "evaluate: more run directories whose probabilities are averaged."
)
flags.DEFINE_bool(
    "distributed",
    False,
    "Join a multi-process run with jax.distributed (implied by --coordinator_address). "
    "On TPU VMs and SLURM the cluster provides the coordinator and process ids.",
)
flags.DEFINE_string("coordinator_address", "", "host:port of process 0, for multi-process runs.")
flags.DEFINE_integer("num_processes", 0, "Number of processes, with --coordinator_address.")
flags.DEFINE_integer("process_id", -1, "This process's id (0..num_processes-1).")
flags.DEFINE_bool(
    "print_config",
    False,
    "Print every field of --config (with the overrides), its comment and default, and exit.",
)

ROOT = os.path.dirname(os.path.abspath(__file__))
# Where each config field is defined with its comment: the file and the name it assigns to.
FIELD_SOURCES = (("configs/default.py", "config"), ("flaxcls/data/api.py", "data"))
HELP_FLAGS = ("-h", "-?", "--help", "--helpshort")


def print_help() -> None:
    """run.py's own flags and where the config fields are, rather than absl's exit status 1."""
    flag_help = FLAGS.main_module_help().strip().split("\n", 1)[-1]  # drop the "run.py:" heading
    print(f"{__doc__}\n{CONFIG_HELP}\nflags:\n{flag_help}\n\n--helpfull: absl's own flags too.")


def field_comments() -> dict[str, str]:
    """Each config field's comment in its defining file: the comment lines right above the
    assignment and the comment on its own lines, by dotted key ("batch_size", "data.path")."""
    comments: dict[str, str] = {}
    for path, name in FIELD_SOURCES:
        with open(os.path.join(ROOT, path), encoding="utf-8") as f:
            source = f.read()
        by_line = {
            token.start[0]: token.string.lstrip("#").strip()
            for token in tokenize.generate_tokens(io.StringIO(source).readline)
            if token.type == tokenize.COMMENT
        }
        lines = source.splitlines()
        for node in ast.walk(ast.parse(source)):
            if not isinstance(node, ast.Assign) or not isinstance(node.targets[0], ast.Attribute):
                continue
            key = ast.unparse(node.targets[0])
            if not key.startswith(name + "."):
                continue
            above, line = [], node.lineno - 1
            while line >= 1 and lines[line - 1].strip().startswith("#"):
                above.insert(0, by_line[line])
                line -= 1
            own = [by_line[i] for i in range(node.lineno, node.end_lineno + 1) if i in by_line]
            key = key.removeprefix("config.")
            comments[key] = " ".join(above + own)
    return comments


def config_listing(config: ConfigDict) -> str:
    """`key = value  # comment` for every leaf of `config`, with the default where it differs."""
    from configs import default

    defaults = default.get_config().to_dict()
    comments = field_comments()

    def leaves(tree: dict, prefix: str = ""):
        for key, value in tree.items():
            if isinstance(value, dict):
                yield from leaves(value, f"{prefix}{key}.")
            else:
                yield prefix + key, value

    flat_defaults = dict(leaves(defaults))
    rows = []
    for key, value in leaves(config.to_dict()):
        note = comments.get(key, "")
        if key in flat_defaults and flat_defaults[key] != value:
            note = f"(default {flat_defaults[key]!r}) {note}".strip()
        rows.append(f"{key} = {value!r}" + (f"  # {note}" if note else ""))
    return "\n".join(rows)


def parse_flags(argv: list[str]) -> list[str]:
    """absl parsing, with one readable line instead of a traceback for a bad config."""
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        print_help()
        sys.exit(0)
    config_path = _config_path(argv)
    if config_path is not None and not os.path.isfile(config_path.split(":")[0]):
        sys.exit(f"error: config file {config_path!r} does not exist.")
    try:
        remaining = FLAGS(argv)
    except Exception as e:  # noqa: BLE001 - the config file's own error may be of any type
        _exit_if_config_file_fails(config_path)
        if isinstance(e, (AttributeError, KeyError)):  # a typo'd --config.key under lock_config
            sys.exit(f"error: {_unknown_key_message(str(e))}")
        if isinstance(e, flags.Error):
            sys.exit(f"error: {e}")
        raise
    if config_path is not None and not isinstance(FLAGS.config, ConfigDict):
        _exit_if_config_file_fails(config_path)
        sys.exit(f"error: config file {config_path}: get_config() gave no ConfigDict.")
    return remaining


def _exit_if_config_file_fails(config_path: str | None) -> None:
    """ml_collections loads the config file while flags are parsed and lets its errors through
    as tracebacks (or as a misleading unknown-key error); loading it again says why in a line."""
    problem = config_path and config_file_problem(config_path)
    if problem:
        sys.exit(f"error: config file {config_path.split(':')[0]}: {problem}")


def config_file_problem(spec: str) -> str | None:
    """Why the config file `spec` ("file.py", or "file.py:arg" for get_config(arg)) gives no
    ConfigDict, in one line; None when it gives one."""
    path, *args = spec.split(":", 1)
    try:
        module_spec = importlib.util.spec_from_file_location("flaxcls_config_file", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        get_config = getattr(module, "get_config", None)
        if not callable(get_config):
            return "it defines no get_config() function."
        config = get_config(*args)
    except SyntaxError as e:
        where = "" if os.path.abspath(e.filename or "") == os.path.abspath(path) else e.filename
        return f"{where} line {e.lineno}: {type(e).__name__}: {e.msg}".strip()
    except Exception as e:  # noqa: BLE001 - whatever the file raises is the message
        return f"{_line_in(path, e)}{type(e).__name__}: {_first_line(e)}"
    if not isinstance(config, ConfigDict):
        what = "None" if config is None else f"a {type(config).__name__}"
        return f"get_config() returned {what}, not an ml_collections.ConfigDict."
    return None


def _line_in(path: str, error: BaseException) -> str:
    """The "line N: " of the innermost traceback frame in the file at `path`, if any."""
    frames = traceback.extract_tb(error.__traceback__)
    lines = [f.lineno for f in frames if os.path.abspath(f.filename) == os.path.abspath(path)]
    return f"line {lines[-1]}: " if lines else ""


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _unknown_key_message(text: str) -> str:
    """ml_collections nests the KeyError's repr in the message; keep its two facts."""
    key = re.search(r"[\\']*([A-Za-z0-9_.]+)[\\']*", text)
    hint = re.search(r"Did you mean [^?]*\?", text.replace("\\n", " "))
    parts = [
        f"unknown config key {key.group(1)!r}." if key else text,
        hint.group(0) if hint else "",
    ]
    return " ".join(p for p in parts if p)


def _config_path(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def main(argv: list[str]) -> None:
    if len(argv) > 1 and FLAGS.mode != "predict":
        raise app.UsageError(f"Unexpected arguments: {' '.join(argv[1:])}")
    if FLAGS.mode == "predict" and len(argv) < 2:
        raise app.UsageError("--mode=predict needs image files or folders as arguments")
    if FLAGS.mode == "train" and FLAGS.config is None:
        raise app.UsageError("--config is required, e.g. --config configs/fashion_mnist.py")
    if FLAGS.print_config:
        print(config_listing(FLAGS.config))
        return
    if FLAGS.mode != "train" and not FLAGS.workdir:
        raise app.UsageError(f"--mode={FLAGS.mode} needs --workdir, the run to use")
    workdir = FLAGS.workdir or os.path.join(
        "runs", os.path.splitext(os.path.basename(_config_path(sys.argv) or "run"))[0]
    )
    directories = [("--workdir", workdir)] + [("--ensemble", run) for run in FLAGS.ensemble]
    for flag, directory in directories:
        problem = workdir_problem(directory, FLAGS.mode, flag)
        if problem:
            sys.exit(f"error: {problem}")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if not FLAGS["verbosity"].present:  # orbax and tfds log every file operation at INFO
        logging.set_verbosity(logging.WARNING)
    from flaxcls.core import distributed
    from flaxcls.data import DatasetNotPreparedError
    from flaxcls.errors import ConfigError, TrainingStopped
    from flaxcls.modes.train import train_and_evaluate  # heavy imports after flags are checked
    from flaxcls.rundir.checkpoint import CheckpointError
    from flaxcls.rundir.preemption import Preempted

    if FLAGS.distributed or FLAGS.coordinator_address:
        try:
            distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes, FLAGS.process_id)
        except ConfigError as e:
            sys.exit(f"error: {e}")

    new_directories = [d for d in _parents(workdir) if not os.path.exists(d)]
    try:
        if FLAGS.mode == "evaluate":
            from flaxcls.modes.evaluate import evaluate_run

            evaluate_run(
                workdir, split=FLAGS.split, checkpoint=FLAGS.checkpoint, ensemble=FLAGS.ensemble
            )
        elif FLAGS.mode == "export":
            _export(workdir)
        elif FLAGS.mode == "predict":
            _predict(workdir, argv[1:])
        else:
            train_and_evaluate(FLAGS.config, workdir)
    except (
        ConfigError,
        CheckpointError,
        DatasetNotPreparedError,
        TrainingStopped,
        OSError,  # a missing file, a read-only directory, a full disk
    ) as e:  # what to fix, not a traceback
        sys.exit(f"error: {e}")
    except Preempted as e:  # a clean stop: the scheduler restarts the same command
        print(e, file=sys.stderr)
        if e.signal_name == "SIGINT":  # Ctrl-C: a person stopped it, the shell hears so
            sys.exit(130)
    finally:  # a run that failed before writing anything leaves no empty workdir behind
        if new_directories:
            from flaxcls.rundir import lock

            lock.remove_if_alone(workdir)
        for directory in new_directories:
            with contextlib.suppress(OSError):  # not empty: the run wrote something
                os.rmdir(directory)


def _parents(directory: str) -> list[str]:
    """`directory` and the folders above it, deepest first."""
    path, parents = os.path.abspath(directory), []
    while os.path.dirname(path) != path:
        parents.append(path)
        path = os.path.dirname(path)
    return parents


def workdir_problem(directory: str, mode: str, flag: str = "--workdir") -> str | None:
    """Why `directory` cannot serve --mode=`mode`, in one line, or None: checked before the
    heavy imports, so a wrong path costs no time."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        return f"{flag} {directory} is a file, not a directory."
    if mode == "train":
        return None
    needs = f"--mode={mode} needs the directory of a trained run"
    if not os.path.isdir(directory):
        return f"{flag} {directory} does not exist; {needs}."
    if not os.path.isfile(os.path.join(directory, "config.json")):
        return f"{flag} {directory} is not a flaxcls run (it has no config.json); {needs}."
    checkpoints = os.path.join(directory, "checkpoints")
    if not os.path.isdir(checkpoints) or not os.listdir(checkpoints):
        return (
            f"{flag} {directory} has no checkpoint yet; train it first: "
            f"python run.py --config CONFIG --workdir {directory}"
        )
    return None


def _export(workdir: str) -> None:
    from flaxcls.modes.export import FORMATS, export_run

    formats = FORMATS if FLAGS.format == "all" else (FLAGS.format,)
    result = export_run(workdir, formats=formats, checkpoint=FLAGS.checkpoint)
    for name, figures in result["parity"].items():
        images = "test images" if figures["accuracy"] is not None else "random images"
        accuracy = (
            f", accuracy {figures['accuracy']:.4f} (JAX {result['jax_accuracy']:.4f})"
            if figures["accuracy"] is not None
            else ""
        )
        print(
            f"{name}: {result['artefacts'][name]['path']}  top-1 agrees with JAX on "
            f"{figures['top1_agreement']:.2%} of {figures['images']} {images}, max |p - p_jax| "
            f"{figures['max_abs_prob_diff']:.2e}{accuracy}"
        )


def _predict(workdir: str, paths: list[str]) -> None:
    from flaxcls.data.folder import IMAGE_EXTENSIONS
    from flaxcls.modes.predict import expand_paths, format_result, predict_files

    files = expand_paths(paths)
    if not files:
        sys.exit(
            f"error: no image files in {', '.join(paths)} (looked for "
            f"{', '.join(IMAGE_EXTENSIONS)}); nothing to predict."
        )
    results = predict_files(workdir, files, top_k=FLAGS.top_k, checkpoint=FLAGS.checkpoint)
    for result in results:
        print(format_result(result))
    failed = sum("error" in r for r in results)
    if failed == len(results):
        sys.exit(
            "error: the file given is not a readable image."
            if failed == 1
            else f"error: none of the {failed} files given is a readable image."
        )
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
