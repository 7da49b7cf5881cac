"""The memory plan: parameter-sized figures against a hand count, compiled activations against a
deeper model's compiled program, `auto` settings for a target, undivided dimensions reported, and
dry runs that exit 0 with plan.json or 1 with one line."""

import json
import math
import subprocess

import jax
import pytest

from configs import eval as eval_config
from configs import rl as rl_config
from configs import sft as sft_config
from sv_jax import plan
from sv_jax.models import ModelConfig
from sv_jax.sharding import make_mesh, mesh_of
from tests.killing import ENV, REPO, stage_command

QWEN_7B = dict(vocab=152064, hidden=3584, mlp=18944, layers=28, heads=28, kv_heads=4, head_dim=128)


def qwen_7b_hand_count(devices: int) -> tuple[int, int]:
    """Qwen2.5-Math-7B's parameters, and the elements one device holds under FSDP over `devices`: every
    matrix and norm scale splits its hidden axis, the q / k / v biases (head axes only) stay whole."""
    m = QWEN_7B
    q, kv = m["heads"] * m["head_dim"], m["kv_heads"] * m["head_dim"]
    biases = q + 2 * kv
    layer = m["hidden"] * (q + 2 * kv) + q * m["hidden"] + 3 * m["hidden"] * m["mlp"] + 2 * m["hidden"] + biases
    total = m["layers"] * layer + 2 * m["vocab"] * m["hidden"] + m["hidden"]  # embedding, lm_head, final norm
    replicated = m["layers"] * biases
    return total, (total - replicated) // devices + replicated


def preset(module, name: str, **overrides):
    config = module.get_config(name)
    for key, value in overrides.items():
        section, _, leaf = key.rpartition(".")
        (config[section] if section else config)[leaf] = value
    return config


def test_parameter_optimizer_and_reference_bytes_equal_a_hand_count(tmp_path, monkeypatch):
    config = preset(sft_config, "qwen25_math_7b", hardware="8xh100", workdir=str(tmp_path))
    config.stage = "sft"
    monkeypatch.setattr(plan, "_activations", lambda *_: (2**30, "compiled"))  # the test below compiles
    plan.resolve(config)
    planned = plan.announce(config)
    total, per_device = qwen_7b_hand_count(8)
    assert planned["model"]["parameters"] == total
    figures = planned["bytes_per_device"]
    assert planned["param_dtype"] == "float32"  # a float32 master copy fits an H100 at fsdp=8
    assert figures["parameters"] == pytest.approx(4 * per_device, rel=0.01)
    assert figures["optimizer"] == pytest.approx(2 * 4 * per_device, rel=0.01)
    assert figures["reference"] == pytest.approx(4 * per_device, rel=0.01)
    assert planned["activations_from"] == "compiled" and planned["fits"]
    assert json.loads((tmp_path / "plan.json").read_text())["bytes_per_device"] == figures


def test_activations_compiled_at_two_and_three_layers_extrapolate_to_a_deeper_model():
    """The plan's count for 8 layers (from programs of 2 and 3) against the 8-layer program itself."""
    mesh = make_mesh((2, 4), ("fsdp", "model"))
    model = ModelConfig(family="qwen2", vocab_size=4096, hidden_size=256, intermediate_size=704, num_layers=8,
                        num_heads=8, num_kv_heads=4, head_dim=32, attention_bias=True, mesh=mesh, vocab_chunk=1024)
    for remat in ("none", "full"):
        step = plan.Training("lm", rows=8, time=256, micro_batches=1, remat=remat, reference=False)
        planned, source = plan._activations(model.replace(remat=remat), step, mesh)
        measured = plan._compiled_temporaries(model.replace(remat=remat), step, mesh) - plan._shard_bytes(model, mesh)
        assert source == "compiled"
        assert planned == pytest.approx(measured, rel=0.10), remat
        # the analytic fallback is a rough count: the same order of magnitude
        assert 0.5 < plan._analytic_activations(model.replace(remat=remat), step, mesh) / measured < 2, remat


def test_auto_settings_resolve_for_the_target():
    config = preset(rl_config, "qwen25_math_7b", hardware="8xh100")
    plan.resolve(config)
    assert (tuple(config.mesh.axes), config.model.dtype, config.model.param_dtype) == (("fsdp",), "bfloat16", "float32")
    assert (config.sft.remat, config.rl.remat) == ("full", "full")
    assert (config.sft.micro_batches, config.rl.micro_batches) == (32 // 8, 64 * 4 // 4 // 8)  # a row per device
    # sampling's bfloat16 copy of the weights (15 GB): a fifth of an H100, all of a v5e chip
    assert config.mesh.sampling_weights == "gathered"
    small = preset(rl_config, "qwen25_math_7b", hardware="v5e-8")
    plan.resolve(small)
    assert small.model.param_dtype == "bfloat16"  # 16 GiB chips: no float32 master copy
    assert small.mesh.sampling_weights == "sharded"
    wrong = preset(rl_config, "qwen25_math_7b", hardware="v5p-32")
    with pytest.raises(plan.UserError, match="config key 'hardware': v5p-32 has 16 devices, this run has 8"):
        plan.resolve(wrong)


def test_dimensions_a_mesh_axis_does_not_divide_are_reported():
    config = preset(eval_config, "qwen25_math_7b", **{"mesh.shape": (1, 8), "mesh.axes": ("fsdp", "model")})
    config.model.dtype = config.model.param_dtype = "bfloat16"
    found = plan.undivided_dimensions(plan.architecture(config), mesh_of(config))
    assert "heads (28) is not divisible by model=8: whole on model" in found
    assert "kv_heads (4) is not divisible by model=8: whole on model" in found
    assert not any(note.startswith(("embed", "mlp", "vocab")) for note in found)


def dry_run(tmp_path, config: str, *overrides: str) -> subprocess.CompletedProcess:
    command = stage_command(config, tmp_path, "--config.dry_run=True", *overrides)
    return subprocess.run(command, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)


def test_a_dry_run_writes_the_plan_and_exits_0_when_it_fits(tmp_path):
    done = dry_run(tmp_path, "configs/eval.py:qwen25_math_1_5b", "--config.hardware=1xh100")
    assert done.returncode == 0, done.stderr
    planned = json.loads((tmp_path / "plan.json").read_text())
    # the sampler's cache: keys and values of 28 layers, 64 rows of 512 + 4096 slots, 2 KV heads of 128, bf16
    assert planned["bytes_per_device"]["kv_cache"] == 2 * 28 * 64 * (512 + 4096) * 2 * 128 * 2
    # and the sampler's copy of the weights: on one device, every parameter in bfloat16
    assert planned["bytes_per_device"]["sampling_weights"] == 2 * planned["model"]["parameters"]
    assert planned["fits"] and not (tmp_path / "eval").exists()  # nothing ran


def test_a_plan_that_does_not_fit_exits_1_with_one_line(tmp_path):
    done = dry_run(tmp_path, "configs/rl.py:qwen25_math_7b", "--config.hardware=v5e-8",
                   "--config.model.param_dtype=float32")
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0 and "set model.param_dtype=bfloat16" in done.stderr, done.stderr
    total, per_device = qwen_7b_hand_count(8)
    planned = json.loads((tmp_path / "plan.json").read_text())
    assert planned["bytes_per_device"]["parameters"] == pytest.approx(4 * per_device, rel=0.01)
    assert math.isclose(planned["device_memory"], 15.75 * 2**30, rel_tol=1e-6)


def test_an_unknown_sampling_weights_setting_is_one_line():
    config = preset(rl_config, "qwen25_math_7b", hardware="8xh100")
    config.mesh.sampling_weights = "copied"
    with pytest.raises(plan.UserError, match="config key 'mesh.sampling_weights': 'copied' is not one of auto"):
        plan.resolve(config)


def test_an_unknown_target_is_one_line(tmp_path):
    done = dry_run(tmp_path, "configs/rl.py:qwen25_math_7b", "--config.hardware=v9-1")
    assert done.returncode == 2 and "config key 'hardware': unknown target 'v9-1'" in done.stderr
    assert jax.device_count() == 8  # the tests' own simulated devices are untouched
