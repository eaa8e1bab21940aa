"""benchmarks/gpu_plan.py: every part's commands are ones its scripts accept, its 97% search
variants are valid configs, test97 takes the search's best variant, and (slow) the whole plan
runs end to end on a CPU at tiny sizes."""

import json
import os
import subprocess
import sys

import pytest

from flaxcls.config import check_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import airbench_fashion  # noqa: E402
import gpu_plan  # noqa: E402
import recipe_seeds  # noqa: E402
import resnet50_vs_pytorch  # noqa: E402

PARSERS = {
    "airbench_fashion.py": airbench_fashion.parse_args,
    "resnet50_vs_pytorch.py": resnet50_vs_pytorch.parse_args,
    "recipe_seeds.py": recipe_seeds.parse_args,
}


def _context(tmp_path, tiny: bool) -> gpu_plan.Context:
    data = str(tmp_path / "fashion-mnist")
    return gpu_plan.Context(str(tmp_path), data, data, tiny, env={})


def _write_search_result(out, name: str, accuracy: float | None) -> None:
    summary = {"seeds_finished": 0 if accuracy is None else 1, "seeds_run": 1}
    if accuracy is not None:
        summary["mean_val_accuracy"] = accuracy
    with open(os.path.join(out, f"search97_{name}.json"), "w", encoding="utf-8") as f:
        json.dump({"summary": summary}, f)


@pytest.mark.parametrize("tiny", [False, True])
def test_every_command_is_accepted_by_its_script(tmp_path, tiny):
    ctx = _context(tmp_path, tiny)
    _write_search_result(ctx.out, "no_sam_80ep", 0.95)  # so test97 has commands
    for name, part in gpu_plan.PARTS.items():
        commands = part.commands(ctx)
        assert commands, name
        for command in commands:
            script = os.path.basename(command[1])
            assert os.path.isfile(command[1]), command[1]
            PARSERS[script](command[2:])  # argparse exits on a flag the script lacks


@pytest.mark.parametrize("variant", sorted(gpu_plan.SEARCH_VARIANTS))
def test_search_variants_are_valid_configs(variant):
    overrides = [*gpu_plan.VALIDATION, *gpu_plan.SEARCH_VARIANTS[variant]]
    # recipe_seeds hands each to run.py as --config.KEY=VALUE, which parses the value
    config = recipe_seeds.load_config(gpu_plan.CONFIG_97, overrides)
    check_config(config)
    assert config.data.validation_fraction > 0  # the search never reads the test set


def test_test97_takes_the_best_finished_variant(tmp_path):
    ctx = _context(tmp_path, tiny=False)
    assert gpu_plan.test97(ctx) == []  # nothing searched yet: nothing to test
    _write_search_result(ctx.out, "sam_40ep", 0.951)
    _write_search_result(ctx.out, "randaugment_2x9", 0.956)
    _write_search_result(ctx.out, "wrn28_10_12ep", None)  # stopped by the budget
    assert gpu_plan.best_variant(ctx.out) == ("randaugment_2x9", 0.956)
    (command,) = gpu_plan.test97(ctx)
    assert "--validation" not in command
    for override in gpu_plan.SEARCH_VARIANTS["randaugment_2x9"]:
        assert override in command


@pytest.mark.slow
def test_tiny_plan_runs_end_to_end(tmp_path):
    out = tmp_path / "out"
    subprocess.run(
        [sys.executable, os.path.join(ROOT, "benchmarks", "gpu_plan.py"), "--tiny"]
        + ["--out", str(out)],
        check=True,
        cwd=ROOT,
    )
    with open(out / "plan.json", encoding="utf-8") as f:
        plan = json.load(f)
    assert set(plan["parts"]) == set(gpu_plan.PARTS)
    assert all(part["status"] == "done" for part in plan["parts"].values()), plan
    for name in ("speedrun.json", "resnet50_variants.json", "test97.json"):
        assert (out / name).is_file(), name
