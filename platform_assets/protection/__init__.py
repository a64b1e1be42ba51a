"""The protection system: what is protected (resolved so that a dropped table is never forgotten), checkpoints,
restores as explicit steps, the safeguard that never discards data, consistency groups; `loaded.py` is the
protected set as this process loads it. Imports: layers (the source assets a checkpoint follows), resources."""
