"""Evaluations run on parameters during training and from the command line: retrieval on validation
splits, STS, BEIR-format retrieval."""
