"""Experiment tooling around the surgery: model specs, datasets, training, distributed helpers, policy sweeps, plots
and the demo. Import the modules directly; they pull in optional dependencies (``sweep`` extra)."""
