"""The benchmark of issue 6: trio_stock, the source documents' stacks, Trio's ceiling."""
