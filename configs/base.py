"""Stage base: pretrain the built-in task's tiny initial policy π₀ from scratch (CPU, minutes)."""

import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
    config = default.get_config()
    config.stage = "base"
    config.base = ml_collections.ConfigDict()
    # The decoder (Llama family, so that its tokenizer loads as saved; see DESIGN.md section 6).
    config.base.hidden_size = 128
    config.base.num_layers = 4
    config.base.num_heads = 4
    config.base.intermediate_size = 384
    # The corpus: solved training questions, a share with a slip carried to a wrong answer, and
    # checking exercises (a proposed answer, right or slipped, and a worked check with its verdict).
    config.base.slip_rate = 0.3
    config.base.check_share = 0.4
    # Rows pack whole documents up to seq_len tokens, as long as stage 0's longest trajectory, so that
    # every attention distance a trajectory needs is trained.
    config.base.seq_len = 320
    config.base.batch_size = 16
    config.base.steps = 1500
    config.base.learning_rate = 3e-3
    config.base.warmup_steps = 100
    config.base.weight_decay = 0.01
    config.base.checkpoint_every = 250
    config.base.log_every = 25
    # Held-out measurement of π₀: greedy accuracy, and verdict accuracy on checking exercises.
    config.base.eval_questions = 200
    return config
