"""The edge job as pure Python (no Ray): clone, discover, parse, resolve, graph, embed, run."""
