"""The HTML run report and its figures."""
