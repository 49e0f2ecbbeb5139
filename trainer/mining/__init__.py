"""Hard-negative mining (`mine_main.py`): a pair or query corpus -> `query_with_negatives` lines.

The modules follow the data:
  corpus.py      input lines -> distinct anchors, their positives, the candidate pool (+ rejections)
  embeddings.py  texts -> unit embeddings, sharded over the devices, written shard by shard (resume)
  search.py      exact blocked top-k of every anchor over the pool (pool split over the mesh)
  filters.py     sentence-transformers' `mine_hard_negatives` rules: exclusions, margins, ranks, sampling
  report.py      counts, score histograms, filter counts, settings, the model's fingerprint
  run.py         the whole run: settings, work directory, output file and report
"""
