"""The attachment pipeline: deadline queue, safe streaming fetch, content-addressed blobs."""
