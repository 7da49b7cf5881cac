"""The jitted numerics of training: losses, optimizer, train steps. Orchestration lives in stages."""
