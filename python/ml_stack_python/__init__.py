"""ml_stack_python: the Python engine of ml_stack (see docs/python-engine.md)."""
