"""The trainer's input: records -> per-corpus streams -> batches -> packed rows."""
