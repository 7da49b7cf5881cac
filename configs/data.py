"""Stage 0: sample the initial policy, grade, and build difficulty-aware trajectories."""

import dataclasses

import ml_collections

from configs import presets
from configs import base as base_config
from sv_jax.construction import DEFAULT_LEVEL_BOUNDS, DEFAULT_ROUNDS
from sv_jax.trajectory import Cues


def get_config(preset: str = "") -> ml_collections.ConfigDict:
    config = base_config.get_config()  # a fresh workdir runs `base` first, with these settings
    config.stage = "data"
    config.data = ml_collections.ConfigDict()
    # Questions: a questions JSONL or a prepared TFDS folder (`sv_jax.datasets.prepare_tfds`);
    # empty: `num_questions` of the built-in task's training draw.
    config.data.questions = ""
    config.data.split = "train"  # of a TFDS folder
    config.data.num_questions = 2000
    config.data.k = 8  # samples per question
    config.data.temperature = 0.7
    config.data.max_new_tokens = 96
    config.data.batch_size = 64
    config.data.verification = "mixed"  # problem_solving | confirmative | mixed
    config.data.confirmative_share = 0.75  # of `mixed` verifications (as in π₀'s checking exercises)
    # accuracy at or above each: levels 1..4; below: 5 (see sv_jax/construction.py)
    config.data.level_bounds = DEFAULT_LEVEL_BOUNDS
    config.data.rounds = tuple(DEFAULT_ROUNDS[level] for level in range(1, 6))  # solve-verify rounds at levels 1..5
    # A share of the questions at a one-round level (level 1 on the defaults), whose trajectory {right
    # attempt, confirming check} then opens with a right attempt wrongly rejected by a check with a
    # slip in it (not learned): SFT also shows a retry after a false rejection, which keeps the right
    # answer (by another route: `retry_route`). 0: the paper's trajectories alone. On a questions file
    # each such question asks the verifier again for every right candidate, for a check with the wrong
    # verdict.
    config.data.false_rejections = 1.0
    # `other`: a trajectory's right attempt takes another route than the wrong attempt just rejected,
    # where one of π₀'s samples did, and a false rejection is followed by a right attempt by another
    # route (questions with none get no false rejection); `any`: any right attempt, and a false
    # rejection followed by the rejected attempt again, verbatim (which taught "after a rejection,
    # write the same answer"). A questions file's routes are its distinct texts.
    config.data.retry_route = "other"
    # The built-in task's right solution by every route joins each question's pool after π₀'s own
    # samples, so a retry by another route exists where π₀ took one route only (a questions file
    # has no routes: nothing joins).
    config.data.reference_routes = False
    # The right retry after a confirmative check's rejection is read off the check (built-in task
    # only): the rejected answer less the difference the check ends on (`46 - 7 = 39 .`), where the
    # attempt's error shows; after a problem-solving check the retry still solves by another route.
    # False rejections are then shown by problem-solving checks only: a correction read off a
    # confirmative one would teach a wrong answer.
    config.data.correct_from_check = False
    config.data.use_reference = True  # a question with no right sample ends on its reference solution
    config.data.tfds = True  # also write the trajectories as a TFDS dataset (workdir/data/tfds)

    # A questions file's format (the built-in task has its own, shorter one): the prompt, and the cue
    # and verdict phrases that join the actions of a response (the paper's code's, by default).
    config.data.prompt = "{question}\nPlease reason step by step, and put your final answer within \\boxed{}.\n"
    config.data.cues = ml_collections.ConfigDict(dataclasses.asdict(Cues()))
    config.data.grader = ml_collections.ConfigDict({"workers": 2, "timeout_s": 5})  # math-verify processes
    # A questions file's verifications: written by a verifier model (empty path: the policy itself)
    # in the asked style, `tries` samples each; the first with the verdict wanted is kept (the grader's).
    config.data.verifier = ml_collections.ConfigDict()
    config.data.verifier.path = ""
    config.data.verifier.tries = 4
    config.data.verifier.temperature = 0.7
    config.data.verifier.max_new_tokens = 512
    config.data.verifier.prompts = ml_collections.ConfigDict({
        "problem_solving": (
            "{question}\n\nA proposed solution:\n{attempt}\n\nCheck it by solving the problem again "
            "independently and comparing your answer with the proposed one. End with \"{correct}\" or "
            "\"{incorrect}\"\n\n"),
        "confirmative": (
            "{question}\n\nA proposed solution:\n{attempt}\n\nCheck it by taking the proposed answer as given "
            "and substituting it back into the conditions of the problem. End with \"{correct}\" or "
            "\"{incorrect}\"\n\n"),
    })
    return presets.apply(config, preset)
