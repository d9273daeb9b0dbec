"""The /explorer page and its static files."""
