"""ml_collections configs: `default.py` holds every shared knob; one file per stage changes a few."""
