"""Many small MLPs trained as one stacked model: the engine, its cross-validation, the search."""
