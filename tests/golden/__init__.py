"""Golden numbers: frozen CLI outputs (``*.json``) and the invocations that produce them (``cases.py``)."""
