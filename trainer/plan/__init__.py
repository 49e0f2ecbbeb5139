"""Planning for TPU slices without a TPU: compiled programs, program counts, memory, FLOPs, preflight."""
