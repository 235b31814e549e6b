"""Real models in the harness: attention swapping (swap), loading (load) and text corpora (data).

Importing this package imports nothing heavy; transformers is imported by the functions that need it."""
