"""The ``tinyrnn`` command line (installed as the package ``tinyrnn_cli``; see ``main.py``)."""
