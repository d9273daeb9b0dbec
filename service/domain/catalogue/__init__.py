"""The stored models: read, list, find, rename, delete, import, export; their one writer."""
