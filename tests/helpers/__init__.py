"""Helpers the tests share (imported as ``helpers.<module>``: pytest puts ``tests/`` on ``sys.path``).

Kept out of ``conftest.py``, which holds fixtures only, so that no test imports from it.
"""
