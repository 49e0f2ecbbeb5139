"""A custom MTEB task for tests/test_evaluators_mteb.py: an STS task on 20 sentence pairs made here, so
it needs no Hugging Face hub. It is what a user's own task for private data looks like, given to
training as `--mteb_tasks=tests._mteb_task:LocalSTS`. Importing this module needs `mteb`."""

from __future__ import annotations

from datasets import Dataset, DatasetDict
from mteb import TaskMetadata
from mteb.abstasks.sts import AbsTaskSTS

# (sentence1, sentence2, gold score in [0, 5]); distinct scores, so Spearman has no ties among them.
PAIRS = [
    ("A man is playing a guitar.", "A man plays the guitar.", 4.9),
    ("A woman is slicing an onion.", "A woman is cutting an onion.", 4.7),
    ("A child is riding a horse.", "A kid rides a horse.", 4.6),
    ("The cat sleeps on the sofa.", "A cat is asleep on the couch.", 4.4),
    ("Two dogs run across the field.", "Two dogs are running on the grass.", 4.2),
    ("A man is cooking pasta.", "A man is making spaghetti.", 3.9),
    ("The train left the station late.", "The train departed behind schedule.", 3.7),
    ("A woman is playing the flute.", "A man is playing a flute.", 3.2),
    ("Stocks fell sharply in Asia.", "Asian markets dropped today.", 3.0),
    ("A boy is reading a book.", "A girl is writing a letter.", 2.6),
    ("The chef tastes the soup.", "The cook is stirring a pot.", 2.3),
    ("A bird sits on a branch.", "A plane flies over the city.", 1.9),
    ("It is raining in London.", "London has a wet climate.", 1.7),
    ("A man is erasing a chalk board.", "The man is slicing a tomato.", 1.2),
    ("The committee approved the budget.", "A dog barks at the mailman.", 0.9),
    ("She is painting a portrait.", "He fixes the engine of a car.", 0.7),
    ("The baby laughs at the puppy.", "Quantum computers use qubits.", 0.5),
    ("Rain is expected tomorrow.", "The museum opens at nine.", 0.3),
    ("A woman is dancing.", "The stock exchange closed early.", 0.2),
    ("The cat sleeps.", "Interest rates rose again.", 0.1),
]


class LocalSTS(AbsTaskSTS):
    """An STS task whose test split is PAIRS; main score cosine Spearman, as STSBenchmark's."""

    min_score = 0
    max_score = 5
    metadata = TaskMetadata(
        name="LocalSTS",
        # load_data below builds the data; path and revision are required fields, never fetched here.
        dataset={"path": "local/LocalSTS", "revision": "local"},
        description="Twenty English sentence pairs with similarity scores, made in the tests.",
        type="STS",
        category="t2t",
        modalities=["text"],
        eval_splits=["test"],
        eval_langs=["eng-Latn"],
        main_score="cosine_spearman",
    )

    def load_data(self, num_proc=None, **kwargs) -> None:
        if self.data_loaded:
            return
        s1, s2, scores = zip(*PAIRS)
        self.dataset = DatasetDict(
            {"test": Dataset.from_dict({"sentence1": list(s1), "sentence2": list(s2), "score": list(scores)})}
        )
        self.data_loaded = True


LocalSTSAgain = LocalSTS  # named by a test: the same task twice


class NotATask:
    """Named by a test: a class that is not an mteb task."""
