"""The WORM replica: manifest chunks, blobs and checkpoints copied to an S3 bucket with
Object Lock (`bucket`: keys, client, never-overwriting PUTs, start-up check; `replicator`: the
daemon's task; `audit`, `restore`, `hold`: the `replica verify`, `restore` and `legal-hold`
commands)."""
