"""Work over many fits: model selection, comparisons, plots."""
