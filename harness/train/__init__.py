"""Training of methods with learned parts: distillation losses (losses.py) and the trainer (loop.py).

Used by `python -m harness distill` (harness/tasks/distill.py) and `python -m harness accuracy`."""
