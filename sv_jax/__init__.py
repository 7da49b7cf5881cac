"""sv_jax: teach language models to self-verify and self-correct (the S²R recipe) in JAX."""
