"""The one entry point: `python -m sv_jax.main --config=configs/<stage>.py [--config.key=value ...]`.

Bad input of any kind (a config key, a data file, a model folder, a checkpoint) ends the run with
one line that names it and exit status 2, never a traceback. A dry run (`--config.dry_run=True`)
prints the memory plan and exits 0, or 1 with one line when the plan does not fit. A loss or gradient
norm that is not finite ends the stage with one line and exit status 1.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from absl import app, flags
from ml_collections import ConfigDict, config_flags

from sv_jax.errors import Diverged, UserError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Stage config file, e.g. configs/rl.py.")
_WORKDIR = flags.DEFINE_string("workdir", None, "Overrides config.workdir.")


def _fail(message: str) -> None:
    print(f"sv_jax: error: {message}", file=sys.stderr)
    sys.exit(2)


def _config_override_at_fault(key: str, argv: list[str]) -> str:
    """The `--config.a.b=...` argument whose path contains the unknown `key`."""
    for arg in argv[1:]:
        name = arg.split("=", 1)[0].lstrip("-")
        if name.startswith("config.") and key in name.split(".")[1:]:
            return name.removeprefix("config.")
    return key


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with every failure turned into one line."""
    for arg in argv[1:]:
        if arg.startswith("--config="):
            config_file = Path(arg.split("=", 1)[1].split(":", 1)[0])
            if not config_file.is_file():
                _fail(f"config file {config_file} not found")
            # so that `configs/<stage>.py` imports `configs.default` from any working directory
            sys.path.insert(0, str(config_file.absolute().parent.parent))
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as error:  # ml_collections: an override of a key the config lacks
        key = str(error.args[0]).strip("'\"") if error.args else ""
        _fail(f"unknown config key {_config_override_at_fault(key, argv)!r}")
    except flags.Error as error:
        _fail(str(error).splitlines()[0])
    except (OSError, SyntaxError, ImportError) as error:
        _fail(f"cannot load the config file: {error}")
    raise AssertionError("unreachable")


def main(argv: list[str]) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    if config is None:
        _fail("--config is required, e.g. --config=configs/rl.py")
    if not isinstance(config, ConfigDict):  # ml_collections defers a file's load error to first use
        try:
            config.stage
        except Exception as error:  # noqa: BLE001 - whatever the config file raised
            _fail(f"cannot load the config file: {error}".splitlines()[0])
    if _WORKDIR.value:
        config.workdir = _WORKDIR.value
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # models and data load from local folders only
    # JAX logs each accelerator backend it finds missing (e.g. TPU on a CPU host) at INFO, which
    # absl prints: noise before a stage's own first line, and between a bad input and its one line
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)

    if config.dry_run:
        _simulate_target(config)
    import jax

    from sv_jax import compilation, distributed, stages
    from sv_jax.plan import DoesNotFit

    try:
        if not config.dry_run:
            distributed.initialize(config)
        cache = compilation.enable(config.compilation_cache_dir)
        stages.run(config)
        if cache and jax.process_index() == 0:
            print(f"{compilation.summary()} ({cache})")
    except DoesNotFit as error:
        print(f"sv_jax: does not fit: {error}", file=sys.stderr)
        sys.exit(1)
    except Diverged as error:
        print(f"sv_jax: diverged: {error}", file=sys.stderr)
        sys.exit(1)
    except UserError as error:
        _fail(str(error))


def _simulate_target(config: ConfigDict) -> None:
    """A dry run compiles on this machine's CPU, with as many simulated devices as `config.hardware`
    has, so that a laptop plans a pod's programs (no array is allocated). Before JAX starts."""
    from sv_jax import hardware

    try:
        devices = hardware.target(config.hardware).devices if config.hardware else 1
    except UserError as error:
        _fail(str(error))
    os.environ["JAX_PLATFORMS"] = "cpu"
    os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}"


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
