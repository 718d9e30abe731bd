"""Private implementation of relujax; import the public modules instead."""
