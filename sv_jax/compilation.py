"""Compile once: JAX's persistent compilation cache, on for every stage (`config.compilation_cache_dir`),
and jitted functions shared by the stages of one process (`shared_jit`).

A program compiled once on this machine is loaded from the cache by every later process: the main
job's stages, a resumed run, the test suite's workers. Small programs are cached too (the built-in
task's compile in seconds each, many times over). The cache never fails a run: an unwritable folder
turns it off and an unreadable entry is compiled anew, each with one warning line.
"""

from __future__ import annotations

import functools
import os
import sys
import uuid
import warnings
from typing import Any, Callable, Hashable

import jax
from jax import monitoring

_counts = {"requests": 0, "hits": 0}
_shared: dict[Hashable, Callable] = {}
_warned: set[str] = set()
_installed = False
_EVENTS = {"/jax/compilation_cache/compile_requests_use_cache": "requests", "/jax/compilation_cache/cache_hits": "hits"}
_CACHE_WARNINGS = ("Error reading persistent compilation cache", "Error writing persistent compilation cache")


def enable(directory: str) -> str | None:
    """Turns the cache on in `directory` (`~` expanded; empty: off); returns the folder in use, or
    None when there is none or it cannot be written (after one warning line)."""
    if not directory:
        return None
    folder = os.path.expanduser(directory)
    try:
        os.makedirs(folder, exist_ok=True)
        probe = os.path.join(folder, f".probe-{uuid.uuid4().hex}")
        with open(probe, "w") as file:
            file.write("")
        os.remove(probe)
    except OSError as error:
        _warn(f"compilation cache {folder} is not writable ({error.strerror or error}); compiling without it")
        return None
    jax.config.update("jax_compilation_cache_dir", folder)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    _install(folder)
    return folder


def _install(folder: str) -> None:
    """Counts cache requests and hits, and turns JAX's warning per bad entry into one line."""
    global _installed
    if _installed:
        return
    _installed = True
    monitoring.register_event_listener(_count)
    previous = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        text = str(message)
        if text.startswith(_CACHE_WARNINGS):
            done = "read" if text.startswith(_CACHE_WARNINGS[0]) else "written"
            _warn(f"compilation cache {folder}: an entry could not be {done}; compiled without it")
        else:
            previous(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def _count(event: str, **_: Any) -> None:
    if event in _EVENTS:
        _counts[_EVENTS[event]] += 1


def _warn(line: str) -> None:
    if line not in _warned:
        _warned.add(line)
        print(f"sv_jax: warning: {line}", file=sys.stderr)


def summary() -> str:
    """How many programs came from the cache and how many were compiled, so far in this process."""
    loaded = _counts["hits"]
    return f"compilation cache: {loaded} programs loaded, {_counts['requests'] - loaded} compiled"


def shared_jit(fun: Callable, **options: Any) -> Callable:
    """`jax.jit(fun, **options)`, made once per process for an equal `fun` and equal options, so that
    stages of one main job that run the same program compile it once: rl and rl_outcome's updates, two
    SFT runs' steps, every model load's buffers. The persistent cache cannot stand in for this: even
    its hits trace and lower the program again, and on a cluster JAX writes it from process 0 alone,
    so every other process compiled each program anew in every stage. `fun` must compare by value (a
    frozen dataclass, a module-level function, or a `functools.partial` of one with hashable arguments)."""
    key = (_by_value(fun), tuple((name, _flat(value)) for name, value in sorted(options.items())))
    if key not in _shared:
        _shared[key] = jax.jit(fun, **options)
    return _shared[key]


def _by_value(fun: Callable) -> Hashable:
    if isinstance(fun, functools.partial):  # partials compare by identity
        return fun.func, fun.args, tuple(sorted(fun.keywords.items()))
    return fun


def _flat(value: Any) -> Hashable:
    """A pytree of shardings (or of numbers) as its structure and leaves."""
    leaves, structure = jax.tree.flatten(value)
    return structure, tuple(leaves)
