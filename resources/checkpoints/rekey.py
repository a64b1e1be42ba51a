"""Key rotation of kept checkpoints: re-encrypt a checkpoint to the ring's current key, and say which checkpoints
still need a given key (a key may leave the ring only when none does).

A rekey never has plaintext on disk: each part is decrypted and re-encrypted in memory and written under a new
name; then the manifest — one atomic write — switches to the new parts; then the checkpoint is verified deep
(every part decrypted with the new key, every row re-fingerprinted). Only then are the old parts deleted. A
crash before the manifest switch leaves the old checkpoint whole (the new parts are orphans, deleted on the
next rekey); a failed verification puts the old manifest back.
"""

from __future__ import annotations

import hashlib

from resources.checkpoints.format import ENCRYPTION_ALGORITHM, CheckpointKeyError, decrypt, encrypt, seal
from resources.checkpoints.keys import RING_VAR
from resources.checkpoints.verification import part_name

MANIFEST = "manifest.json"


class CheckpointRekeying:
    def encrypted_with(self, wanted: str) -> list[tuple[str, str]]:
        """(table, checkpoint id) of every kept checkpoint encrypted with key id `wanted`."""
        found = []
        for table in self.tables():
            for checkpoint_id in self.list(table):
                try:
                    manifest = self.manifest(table, checkpoint_id)
                except (ValueError, LookupError, OSError):
                    continue
                if (manifest.get("encryption") or {}).get("key_id") == wanted:
                    found.append((table, checkpoint_id))
        return found

    def rekey(self, table: str, checkpoint_id: str) -> str | None:
        """Re-encrypt one checkpoint (encrypted or plain) to the current key, verified; returns the key id it was
        under ("plain" for none), or None when it already is under the current key."""
        ring = self.keyring()
        if ring.current is None:
            raise CheckpointKeyError(f"{RING_VAR} has no current key to re-encrypt checkpoints to")
        manifest = self.manifest(table, checkpoint_id)
        before = (manifest.get("encryption") or {}).get("key_id")
        if before == ring.current:
            return None
        old_key = self.key_for(table, checkpoint_id, manifest)
        directory = self._dir(table, checkpoint_id)
        files = []
        for number, entry in enumerate(manifest["files"]):
            name = part_name(entry)
            data = self._read(f"{directory}/{name}")
            if hashlib.sha256(data).hexdigest() != entry["sha256"]:
                raise ValueError(f"{table}/{checkpoint_id}/{name} differs from its manifest; not re-encrypted")
            plain = decrypt(old_key, data, f"{table}/{checkpoint_id}/{name}".encode()) if old_key else data
            new_name = f"part-{number:05d}-{ring.current[:8]}.parquet"
            blob = encrypt(ring.current_key, plain, f"{table}/{checkpoint_id}/{new_name}".encode())
            del plain
            self._write(f"{directory}/{new_name}", blob)
            files.append({**entry, "path": new_name, "bytes": len(blob), "sha256": hashlib.sha256(blob).hexdigest()})
        encryption = {"algorithm": ENCRYPTION_ALGORITHM, "key_id": ring.current}
        rekeyed = {**manifest, "files": files, "encryption": encryption}
        self._write(f"{directory}/{MANIFEST}", seal(rekeyed))
        result = self.verify(table, checkpoint_id, level="deep")
        if not result.ok:
            self._write(f"{directory}/{MANIFEST}", seal(manifest))
            raise ValueError(f"{table}/{checkpoint_id}: re-encrypted parts did not verify "
                             f"({'; '.join(result.problems)}); the checkpoint is left under its old key")
        self._delete_parts_except(directory, {f["path"] for f in files})
        return before or "plain"

    def _delete_parts_except(self, directory: str, keep: set[str]) -> None:
        fs, _ = self._fs()
        for info in self._list_dir(directory):
            if info.base_name.startswith("part-") and info.base_name not in keep:
                fs.delete_file(info.path)
