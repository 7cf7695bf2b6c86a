"""`data_hash`: what two recordings of the same run must share.

SHA-256 of the point table, every sample of every plant point (the rig's own ``rig.*``
points, such as the achieved speed, excluded) and the commands. A replay compares it.
"""

from __future__ import annotations

import hashlib
import json
import struct

from rig.record.store import RunStore


def data_hash(store: RunStore) -> str:
    """SHA-256 of the recorded plant data: point ids, samples and commands."""
    keep = [i for i, pid in enumerate(store.point_ids) if not pid.startswith("rig.")]
    h = hashlib.sha256()
    h.update("\n".join(store.point_ids[i] for i in keep).encode())
    for t, measured, truth in store.samples():
        h.update(struct.pack("<d", t) + measured[keep].tobytes() + truth[keep].tobytes())
    for c in store.commands():
        if not c.point.startswith("rig."):
            h.update(json.dumps([c.t, c.point, c.value, c.source]).encode())
    return h.hexdigest()
