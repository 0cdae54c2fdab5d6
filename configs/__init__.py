"""ml_collections configs, one file per program; variants are `file.py:arg1,arg2`."""
