"""Reading inputs, writing outputs atomically, manifests and shard bookkeeping."""
