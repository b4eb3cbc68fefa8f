"""Measuring: the metric store (SQLite history) and the stand-alone collector for physical servers.

Kept free of imports so that ``python -m corral.monitoring.collector`` needs only Python and psutil.
"""
