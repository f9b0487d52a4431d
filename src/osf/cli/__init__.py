"""The ``osf`` command and its built-in model specs."""
