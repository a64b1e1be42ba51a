"""The checkpoint keyring: which key new checkpoints are encrypted with, and which keys old ones may be opened with.

`AEGIS_CHECKPOINT_KEYS` holds `label=key` pairs separated by commas, the current one marked with `*` after its
label, e.g. `2026a=<64 hex>,2026b*=<64 hex>`: new checkpoints use 2026b; a checkpoint under 2026a still opens.
`AEGIS_CHECKPOINT_KEY` (one key) keeps working: alone it is the ring's only, current key; beside a ring it is
one more old key. Manifests name a key by its public id (`key_id`: a hash, never the key), so relabelling a key
in the ring changes nothing stored. A ring that cannot be read is an error naming the variable — never a
silent fallback to plaintext.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from resources.checkpoints.format import CheckpointKeyError, key_id, parse_key

RING_VAR, KEY_VAR = "AEGIS_CHECKPOINT_KEYS", "AEGIS_CHECKPOINT_KEY"
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")


@dataclass(frozen=True)
class Keyring:
    keys: dict[str, bytes]  # key id -> key
    labels: dict[str, str]  # key id -> the label it has in the ring
    current: str | None  # key id of the key new checkpoints use; None: checkpoints are not encrypted

    @property
    def current_key(self) -> bytes | None:
        return self.keys[self.current] if self.current else None

    def key(self, wanted: str) -> bytes | None:
        return self.keys.get(wanted)

    def label(self, wanted: str) -> str:
        return self.labels.get(wanted, wanted)

    def id_of(self, label: str) -> str:
        """The key id of the key labelled `label` (or given by its id)."""
        for kid, name in self.labels.items():
            if label in (name, kid):
                return kid
        raise CheckpointKeyError(f"{RING_VAR} has no key labelled {label!r}; it holds: "
                                 f"{', '.join(sorted(self.labels.values())) or 'none'}")

    def describe(self) -> str:
        return ", ".join(f"{self.labels[k]} ({k}){' current' if k == self.current else ''}" for k in self.keys)


def parse_ring(ring: str | None, single: str | None) -> Keyring:
    """The ring from the two variables' values (see the module docstring)."""
    keys: dict[str, bytes] = {}
    labels: dict[str, str] = {}
    current = None
    for number, entry in enumerate(e.strip() for e in (ring or "").split(",") if e.strip()):
        label, sep, text = entry.partition("=")
        label, is_current = (label[:-1], True) if label.endswith("*") else (label, False)
        if not sep or not _LABEL.fullmatch(label):
            raise CheckpointKeyError(f"{RING_VAR}: entry {number + 1} is not `label=key` (a label of letters, "
                                     "digits, ._-; `label*=key` marks the current key)")
        if label in labels.values():
            raise CheckpointKeyError(f"{RING_VAR}: the label {label!r} appears twice")
        key = parse_key(text, f"{RING_VAR} ({label})")
        kid = key_id(key)
        if kid in keys:
            raise CheckpointKeyError(f"{RING_VAR}: {label!r} is the same key as {labels[kid]!r}")
        keys[kid], labels[kid] = key, label
        if is_current:
            if current:
                raise CheckpointKeyError(f"{RING_VAR}: two keys are marked current ({labels[current]}, {label})")
            current = kid
    if keys and not current:
        raise CheckpointKeyError(f"{RING_VAR}: no key is marked current (write `label*=key` for the one new "
                                 "checkpoints use)")
    single_key = parse_key(single, KEY_VAR)
    if single_key is not None:
        kid = key_id(single_key)
        if kid not in keys:
            keys[kid], labels[kid] = single_key, KEY_VAR
        current = current or kid
    return Keyring(keys, labels, current)
