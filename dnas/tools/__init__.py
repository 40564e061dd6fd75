"""Tools over genotypes and runs: show, deepen, report, pruning export. They use every layer below."""
