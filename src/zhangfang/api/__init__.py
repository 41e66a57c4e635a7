"""The HTTP API: ``create_app`` in ``api.app`` assembles one router per domain (``<domain>/api.py``)."""
