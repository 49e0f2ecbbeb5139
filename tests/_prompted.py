"""The corpora of the `prompted_data_dir` fixture (conftest.py) and their data config, which has
prompts (pipeline/data_config.py): "query" for search anchors, "passage" for their positives and
negatives and for the caption sets' members; `plain` has none."""

PROMPTED_CONFIG = {
    "prompts": {"query": "query: ", "passage": "passage: ", "unused": "never applied: "},
    "default_prompt_name": "query",
    "corpora": [
        {
            "name": "search",
            "files": ["search.jsonl.gz"],
            "record_format": "query_with_negatives",
            "weight": 2,
            "prompts": {"anchor": "query", "candidate": "passage"},
        },
        {
            "name": "captions",
            "files": ["captions.jsonl.gz"],
            "record_format": "set",
            "weight": 1,
            "prompts": {"anchor": "passage", "candidate": "passage"},
        },
        {"name": "plain", "files": ["plain.jsonl.gz"], "record_format": "pair", "weight": 1},
    ],
}
PROMPTED_LINES = {
    "search": [
        {"query": "where is paris", "pos": ["Paris is the capital of France."], "neg": ["Rome is in Italy."]},
        {
            "query": "  who wrote hamlet  ",
            "pos": ["Shakespeare wrote Hamlet.", "Hamlet is a play."],
            "neg": ["Goethe wrote Faust."],
        },
        {"query": "a long question " * 10, "pos": ["an answer that is long as well " * 5], "neg": ["short"]},
    ],
    "captions": [
        {"set": ["A dog runs on the beach.", "A brown dog running by the sea.", "Dog at the shore."]},
        ["Two men play chess.", "A game of chess in the park."],
    ],
    "plain": [["How old is the moon?", "About 4.5 billion years."], ["Is it raining?", "No, it is sunny."]],
}
PROMPTED_MAX_SEQ_LENGTH = 24  # the long texts are cut (with their prompt) at this many tokens

# The prompt table the `prompted_minilm` fixture (conftest.py) gives all-MiniLM-L6-v2 in its
# config_sentence_transformers.json: what the evaluators' and the miner's prompt names look up.
MINILM_PROMPTS = {"query": "Represent this sentence for searching relevant passages: ", "passage": "passage: "}
