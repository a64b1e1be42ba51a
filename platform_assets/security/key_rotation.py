"""Checkpoint key rotation as jobs: `rekey_checkpoints` re-encrypts every kept checkpoint to the ring's current
key (verified, never a plaintext copy on disk: resources/checkpoints/rekey.py) and seals the change log's changes
again under it; `retire_checkpoint_key` says whether a key may leave AEGIS_CHECKPOINT_KEYS, and refuses, listing
them, while kept checkpoints or changes need it."""

from collections import Counter

import dagster as dg

from resources import CheckpointStore
from resources.capture import change_log_rewrites


@dg.op(description="Re-encrypt every kept checkpoint not under the current key to it, each verified deep after; "
       "checkpoints a restore is reading (leased) wait for the next run.")
def rekey_all(context: dg.OpExecutionContext, checkpoints: CheckpointStore) -> dict:
    ring = checkpoints.keyring()
    moved: Counter = Counter()
    waiting = []
    for table in checkpoints.tables():
        leased = checkpoints.leased(table)
        for checkpoint_id in checkpoints.list(table):
            if checkpoint_id in leased:
                waiting.append(f"{table}/{checkpoint_id}")
                continue
            before = checkpoints.rekey(table, checkpoint_id)
            if before:
                moved[ring.label(before)] += 1
                context.log.info(f"{table}/{checkpoint_id}: {ring.label(before)} -> {ring.label(ring.current)}, "
                                 "verified")
    changes = change_log_rewrites.rekey(checkpoints.lake, ring)
    if changes:
        context.log.info(f"change log: {sum(changes.values())} change(s) of {len(changes)} table(s) sealed again "
                         f"under {ring.label(ring.current)}")
    summary = {"current_key": ring.label(ring.current), "re_encrypted": dict(moved), "leased_skipped": waiting,
               "changes_resealed": changes}
    context.log.info(f"rekey: {sum(moved.values())} checkpoint(s) re-encrypted to {summary['current_key']} "
                     f"({dict(moved) or 'none needed it'}); {len(waiting)} leased, left for the next run")
    context.add_output_metadata({k: dg.MetadataValue.json(v) for k, v in summary.items()})
    return summary


class RetireConfig(dg.Config):
    key: str  # the label of the key in AEGIS_CHECKPOINT_KEYS (or its key id)


@dg.op(description="Whether a key may leave the ring: refused, with the list, while a kept checkpoint needs it.")
def check_retirement(context: dg.OpExecutionContext, config: RetireConfig, checkpoints: CheckpointStore) -> str:
    ring = checkpoints.keyring()
    wanted = ring.id_of(config.key)
    if wanted == ring.current:
        raise dg.Failure(f"{config.key} is the current key: mark another key current (label*=key) first")
    needing = checkpoints.encrypted_with(wanted)
    if needing:
        listed = "\n".join(f"- {table}/{checkpoint_id}" for table, checkpoint_id in needing[:50])
        raise dg.Failure(f"{config.key} ({wanted}) cannot be retired: {len(needing)} kept checkpoint(s) need it:\n"
                         f"{listed}\nRun rekey_checkpoints first (or let retention drop them).",
                         metadata={"needing": dg.MetadataValue.json([f"{t}/{c}" for t, c in needing])})
    changes = change_log_rewrites.sealed_with(checkpoints.lake, wanted)
    if changes:
        raise dg.Failure(f"{config.key} ({wanted}) cannot be retired: the change log holds "
                         f"{sum(changes.values())} change(s) sealed with it ({', '.join(sorted(changes))}). Run "
                         "rekey_checkpoints first.", metadata={"changes": dg.MetadataValue.json(changes)})
    message = (f"no kept checkpoint or change needs {config.key} ({wanted}): it may be removed from "
               "AEGIS_CHECKPOINT_KEYS")
    context.log.info(message)
    return message


@dg.job(description="Re-encrypt every kept checkpoint to the current key of AEGIS_CHECKPOINT_KEYS, verified.")
def rekey_checkpoints():
    rekey_all()


@dg.job(description="Say whether a checkpoint key may be removed from AEGIS_CHECKPOINT_KEYS (config: key).")
def retire_checkpoint_key():
    check_retirement()


jobs = [rekey_checkpoints, retire_checkpoint_key]
