"""The archive on disk: manifest (hash-chained JSONL), state cache, lock, verification.

Pure: `manifest` (line format, chain checks), `dedupe`. I/O: `layout` (paths), `lock`,
`schema` + `state` (the SQLite cache) + `index` (the writer's side of it), `recovery`
(start-up scan, torn tail repair, index replay), `segments` (durable appends), `writer` (the
single writer), `verify`, `crash` (crash-test hooks).
"""
