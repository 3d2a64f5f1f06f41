"""The source documents' stacks, built as the documents show (bench/README.md)."""
