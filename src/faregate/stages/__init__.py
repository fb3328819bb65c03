"""Pipeline stages, one per module; `core/pipeline.py` lists their order."""
