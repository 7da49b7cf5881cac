"""π₀ on the default settings (about nine minutes on a 2-core CPU, so opt-in: SV_JAX_SLOW=1): asked to
check a proposed answer in the checking format, it gets the verdict right on at least 80 % of held-out
questions, right and slipped answers alike, and it never verifies unprompted."""

import json
import os

import pytest

from configs import base as base_config
from sv_jax.stages import base

pytestmark = pytest.mark.skipif(not os.environ.get("SV_JAX_SLOW"), reason="trains π₀ on the defaults; set SV_JAX_SLOW=1")


def test_default_initial_policy_checks_proposed_answers(tmp_path):
    config = base_config.get_config()
    config.workdir = str(tmp_path)
    base.run(config)
    figures = json.loads((tmp_path / "base" / "eval.json").read_text())
    assert figures["n"] == config.base.eval_questions and 0.4 <= figures["accuracy"] <= 0.7
    assert figures["check_accuracy"] >= 0.8
    assert all(accuracy >= 0.8 for accuracy in figures["check_accuracy_by_answer"].values())
    assert figures["unprompted_verification"] == 0.0
