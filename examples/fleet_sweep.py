"""A low-balance sweep over any number of keys, spread over arq workers (stability_user.fleet).

    export REDIS_URL=redis://127.0.0.1:6379 STABILITY_KEYS_FILE=keys.csv
    arq fleet_sweep.WorkerSettings                   # on each machine, as many as you like
    python fleet_sweep.py enqueue 2026-12-07         # enqueue a run, show it until done
    python fleet_sweep.py status 2026-12-07          # done/total, checks/s, ETA, failures
    python fleet_sweep.py low 2026-12-07 10          # the targets under 10 credits

``STABILITY_KEYS_FILE`` is in the ``stability-user balances`` format
(``key,organization,label``, every target labelled) at the same path on every
machine; jobs carry byte ranges of it, never a key. Enqueuing a run again after a
crash checks only what is not done. Needs ``pip install 'stability-user[fleet]'``.
"""

import argparse
import asyncio
import os
import sys

from stability_user.fleet import Sweep, SweepError, TargetFile

sweep = Sweep(
    os.environ.get("REDIS_URL", "redis://127.0.0.1:6379"),
    TargetFile(os.environ.get("STABILITY_KEYS_FILE", "keys.csv")),
)
WorkerSettings = sweep.worker_settings()


async def main(command: str, run: str, below: float) -> None:
    if command == "enqueue":
        print(await sweep.enqueue(run))
        async for progress in sweep.watch(run):
            print(progress, flush=True)
    elif command == "status":
        print(await sweep.progress(run))
    else:
        async for result in sweep.results(run):
            if result.credits is not None and result.credits < below:
                print(f"LOW {result.label}: {result.credits:,.2f} credits")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="a low-balance sweep over arq workers")
    parser.add_argument("command", choices=["enqueue", "status", "low"])
    parser.add_argument("run", help="the run's name, e.g. the date")
    parser.add_argument("below", type=float, nargs="?", default=10.0)
    args = parser.parse_args()
    try:
        asyncio.run(main(args.command, args.run, args.below))
    except (SweepError, OSError, ValueError) as error:  # one line, never a traceback
        sys.exit(f"error: {error}")
