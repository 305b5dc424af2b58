"""Benchmark: a classroom behind a school NAT joining directly vs through TURN.

hetou-3's agent sits behind :class:`syncclass.netem.NattedSchool` (nftables masquerade);
coturn (``scripts/turnserver.sh``) and the mixer are on the other side. Rounds alternate
the school's firewall in one run, so the three are compared under the same load:

- ``open``: UDP leaves the school; ICE pairs the agent's host candidate (peer-reflexive
  through the NAT) with the mixer's: the baseline;
- ``udp_blocked``: TURN over TCP;
- ``tcp_only_ports``: only TCP to the mixer's signaling port and TURN's TLS port: TURN over
  TLS (``turns:``).

Per lesson: seconds from Start lesson to both peers connected and to the classroom's first
decoded view frame, then fps both ways over ``--lesson-s``. Writes
benchmarks/results/turn_join.json.

    .venv/bin/python benchmarks/turn_join.py --rounds 3

Needs root (network namespaces, nftables) and coturn (scripts/bootstrap.sh).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

from syncclass.netem import FirewallPolicy
from syncclass.stats import median
from syncclass.testing.turn_support import hold_lesson, turn_nat_deployment

from .harness import RESULTS, environment, write_result

POLICIES: tuple[FirewallPolicy, ...] = ("open", "udp_blocked", "tcp_only_ports")
KEYS = ("join_s", "first_frame_s", "rural_fps", "main_fps", "rural_freezes",
        "rural_max_audio_gap_ms")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--lesson-s", type=float, default=8.0)
    parser.add_argument("--out", type=Path, default=RESULTS / "turn_join.json")
    args = parser.parse_args()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="turn-join-") as tmp, \
            turn_nat_deployment(Path(tmp)) as net:
        for r in range(args.rounds):
            for policy in POLICIES:
                result = hold_lesson(net, policy, args.lesson_s)
                row = {"round": r, **{k: v for k, v in result.items()
                                      if not k.endswith("_reception")}}
                runs.append(row)
                print(f"round {r} {policy:15s} {row['turn_url'] or '-':45s} "
                      f"pair {row['pair']} join {row['join_s']} s, first frame "
                      f"{row['first_frame_s']} s, fps rural {row['rural_fps']} "
                      f"main {row['main_fps']}", flush=True)
    summary = {}
    for policy in POLICIES:
        rows = [x for x in runs if x["firewall"] == policy]
        summary[policy] = {k: {"median": median(float(x[k]) for x in rows),
                               "min": min(float(x[k]) for x in rows),
                               "max": max(float(x[k]) for x in rows)} for k in KEYS}
        summary[policy]["pairs"] = sorted({f"{x['pair']['local']}->{x['pair']['remote']}"
                                           for x in rows if x["pair"]})
    write_result(args.out, {"environment": environment(), "lesson_s": args.lesson_s,
                            "rounds": args.rounds, "summary": summary, "runs": runs})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
