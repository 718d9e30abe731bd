"""Long experiments: the reproduction of the book's table and its quirks, the activation study,
ReLU'(0).

Each runs as ``python -m train.experiments.<name>``; tests/test_experiments.py runs them at toy
sizes.
"""
