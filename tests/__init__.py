"""The test suite. Every JAX process it runs compiles with `FAST_COMPILE`."""

# LLVM's optimizations cost about a third of a tiny run's CPU time and save nothing measurable on
# these microsecond programs (experiments/RESULTS.md); every run of a comparison gets the same flags.
FAST_COMPILE = "--xla_backend_optimization_level=0"
