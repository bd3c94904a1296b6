"""Support code of the benchmark scripts, not installed with the package (lab code, not library code).

``paper``: the paper's CPU figures and the benchmark's model names; ``machine_load``: refuse to time on a busy
machine; ``onnx_tables``: the ONNX benchmark's case list and tables; ``timing``: the eager benchmarks' timers;
``reference_odconv``: the official code's formulation (also the tests' reference). The scripts beside this folder
import it as ``lab`` (their folder is on ``sys.path`` when run as ``python benchmarks/NAME.py``); the tests get
``benchmarks/`` from pytest's ``pythonpath`` setting.
"""
