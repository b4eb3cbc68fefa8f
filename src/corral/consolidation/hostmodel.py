"""What a host's CPU scheduler gives each guest: CloudSim's ``VmSchedulerTimeSharedOverSubscription``.

A host lists its guests in order (the order matters for ties, as in CloudSim). Each guest asks
for its current demand in MIPS, capped at its vCPUs x one core's MIPS (a 1-vCPU guest cannot use
more than one core). A guest migrating *in* costs the destination only 10 % of its demand; a guest
migrating *out* gets 90 % of its demand (the 10 % migration overhead). Guests are admitted in
list order while capacity remains; once a guest does not fit, every guest is scaled down by
capacity / total and rounded down to whole MIPS (the host is oversubscribed).
"""

from __future__ import annotations

import math
from typing import Any

from numba import njit

MIGRATION_IN_SHARE = 0.1
MIGRATION_OUT_SHARE = 0.9


@njit(cache=True)
def allocate_host(
    h: int,
    count: Any,
    members: Any,
    incoming: Any,
    vm_req: Any,
    vm_in_migration: Any,
    vm_cores: Any,
    capacity: float,
    core_mips: float,
    out_alloc: Any,
    in_share: float = MIGRATION_IN_SHARE,
) -> tuple[float, bool]:
    """Allocate host ``h``'s CPU to its guests ``members[h, :count[h]]``; ``incoming[h, k]`` marks
    a guest migrating in, which costs ``in_share`` of its demand (CloudSim: 0.1; the realistic
    model reserves all of it). Writes each guest's MIPS to ``out_alloc[k]`` and returns the MIPS
    still available (0 when oversubscribed) and whether the host is oversubscribed."""
    n = count[h]
    avail = capacity
    over = False
    total_required = 0.0
    for k in range(n):
        v = members[h, k]
        capped = min(vm_req[v], core_mips * vm_cores[v])
        required = capped * in_share if incoming[h, k] else capped
        total_required += required
        if not over:
            if avail >= required:
                avail -= required
            else:
                over = True
    if not over:
        for k in range(n):
            v = members[h, k]
            capped = min(vm_req[v], core_mips * vm_cores[v])
            if incoming[h, k]:
                out_alloc[k] = capped * in_share
            elif vm_in_migration[v]:
                out_alloc[k] = capped * MIGRATION_OUT_SHARE
            else:
                out_alloc[k] = capped
        return avail, False
    scale = capacity / total_required
    for k in range(n):
        v = members[h, k]
        capped = min(vm_req[v], core_mips * vm_cores[v])
        if incoming[h, k]:
            out_alloc[k] = math.floor(capped * in_share * scale)
        elif vm_in_migration[v]:
            out_alloc[k] = math.floor(capped * scale * MIGRATION_OUT_SHARE)
        else:
            out_alloc[k] = math.floor(capped * scale)
    return 0.0, True
