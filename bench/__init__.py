"""The benchmark suite: how close the archiver gets to the physical limits (Zoom's rate
budget, the JWT lifetime, disk, memory), against real baselines, side by side.

    .venv/bin/python -m bench            # make bench; see __main__ for the options

Every row runs the simulator (`python -m archiver simulate --json`) and the archiver
(`python -m archiver run`) as separate processes and measures the archiver's time, CPU and
peak RSS from the kernel (`os.wait4`, /proc). Each figure is the median, min and max of
several runs; ratios are taken pair by pair in the same session.

| row | module | what |
|---|---|---|
| 1-3 | `budget` | rate-budget utilisation, overload recovery, requests per message |
| 4 | `idle` | API calls per poll with 1% of 10,000 sessions active |
| 5, 7 | `cpu_memory` | messages per CPU-second; peak RSS as sessions and attachments grow |
| 6 | `downloads` | download throughput against curl |
| 8 | `freshness` | creation to durable line, polling (and webhook via `webhook_freshness`) |

`harness` starts and measures the processes, `account` reads the simulator's ground truth,
`report` builds the table, `context` holds the sizes (default, full, smoke) and
`profiling` runs the archiver under cProfile in every thread. `export_bench`,
`crash_harness`, `soak` and `webhook_freshness` are separate tools with their own owners.
"""
