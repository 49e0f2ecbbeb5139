"""Evaluations run on parameters during training and from the command line: retrieval, STS."""
