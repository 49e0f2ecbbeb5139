"""Writes the bundled sample corpora (`samples/corpora/*.jsonl.gz`), `samples/data_config.json` and the
demo's BEIR-format retrieval set (`samples/beir/sample_ir/`).

Deterministic (seeded, gzip mtime 0): running it again reproduces the committed files byte for byte.
The texts are generated from small fact tables and sentence templates with synonym substitution and
reordering, so that a model trained on them learns paraphrase, question/answer and caption similarity
rather than string identity. Run: `python samples/make_samples.py`.
"""

from __future__ import annotations

import gzip
import json
import os
import random

HERE = os.path.dirname(os.path.abspath(__file__))
SEED = 20241128

# --- fact tables -----------------------------------------------------------------------------
CAPITALS = [
    ("France", "Paris", "Europe"),
    ("Germany", "Berlin", "Europe"),
    ("Italy", "Rome", "Europe"),
    ("Spain", "Madrid", "Europe"),
    ("Portugal", "Lisbon", "Europe"),
    ("Poland", "Warsaw", "Europe"),
    ("Greece", "Athens", "Europe"),
    ("Norway", "Oslo", "Europe"),
    ("Sweden", "Stockholm", "Europe"),
    ("Finland", "Helsinki", "Europe"),
    ("Ireland", "Dublin", "Europe"),
    ("Austria", "Vienna", "Europe"),
    ("Hungary", "Budapest", "Europe"),
    ("Egypt", "Cairo", "Africa"),
    ("Kenya", "Nairobi", "Africa"),
    ("Nigeria", "Abuja", "Africa"),
    ("Morocco", "Rabat", "Africa"),
    ("Ghana", "Accra", "Africa"),
    ("Japan", "Tokyo", "Asia"),
    ("China", "Beijing", "Asia"),
    ("India", "New Delhi", "Asia"),
    ("Thailand", "Bangkok", "Asia"),
    ("Vietnam", "Hanoi", "Asia"),
    ("Indonesia", "Jakarta", "Asia"),
    ("South Korea", "Seoul", "Asia"),
    ("Canada", "Ottawa", "North America"),
    ("Mexico", "Mexico City", "North America"),
    ("Cuba", "Havana", "North America"),
    ("Brazil", "Brasilia", "South America"),
    ("Argentina", "Buenos Aires", "South America"),
    ("Peru", "Lima", "South America"),
    ("Chile", "Santiago", "South America"),
    ("Australia", "Canberra", "Oceania"),
    ("New Zealand", "Wellington", "Oceania"),
]
RIVERS = [
    ("Nile", "Egypt", "the Mediterranean Sea"),
    ("Amazon", "Brazil", "the Atlantic Ocean"),
    ("Danube", "Austria", "the Black Sea"),
    ("Rhine", "Germany", "the North Sea"),
    ("Thames", "England", "the North Sea"),
    ("Seine", "France", "the English Channel"),
    ("Ganges", "India", "the Bay of Bengal"),
    ("Yangtze", "China", "the East China Sea"),
    ("Mississippi", "the United States", "the Gulf of Mexico"),
    ("Volga", "Russia", "the Caspian Sea"),
    ("Mekong", "Vietnam", "the South China Sea"),
    ("Tagus", "Portugal", "the Atlantic Ocean"),
]
INVENTIONS = [
    ("the telephone", "Alexander Graham Bell", 1876),
    ("the light bulb", "Thomas Edison", 1879),
    ("the printing press", "Johannes Gutenberg", 1440),
    ("the steam engine", "James Watt", 1769),
    ("the World Wide Web", "Tim Berners-Lee", 1989),
    ("dynamite", "Alfred Nobel", 1867),
    ("the radio", "Guglielmo Marconi", 1895),
    ("the airplane", "the Wright brothers", 1903),
    ("penicillin", "Alexander Fleming", 1928),
    ("the periodic table", "Dmitri Mendeleev", 1869),
    ("the telescope", "Hans Lippershey", 1608),
    ("the diesel engine", "Rudolf Diesel", 1893),
]
ANIMALS = [
    ("cow", "moo", "grass", "farms"),
    ("lion", "roar", "meat", "the savanna"),
    ("bee", "buzz", "nectar", "hives"),
    ("owl", "hoot", "mice", "forests"),
    ("frog", "croak", "insects", "ponds"),
    ("horse", "neigh", "hay", "stables"),
    ("wolf", "howl", "deer", "forests"),
    ("duck", "quack", "seeds", "lakes"),
    ("sheep", "bleat", "grass", "meadows"),
    ("snake", "hiss", "rodents", "deserts"),
    ("dolphin", "click", "fish", "the ocean"),
    ("panda", "bleat", "bamboo", "mountain forests"),
]
PLANETS = [
    ("Mercury", "first", "the smallest planet"),
    ("Venus", "second", "the hottest planet"),
    ("Earth", "third", "the only planet known to have life"),
    ("Mars", "fourth", "the red planet"),
    ("Jupiter", "fifth", "the largest planet"),
    ("Saturn", "sixth", "famous for its rings"),
    ("Uranus", "seventh", "tilted on its side"),
    ("Neptune", "eighth", "the windiest planet"),
]

# --- scenes for captions / NLI / paraphrases ----------------------------------------------
SUBJECTS = [
    (["a man", "a guy", "a gentleman"], "man", "person"),
    (["a woman", "a lady"], "woman", "person"),
    (["a boy", "a young boy", "a little boy"], "boy", "child"),
    (["a girl", "a young girl", "a little girl"], "girl", "child"),
    (["a dog", "a puppy"], "dog", "animal"),
    (["a cat", "a kitten"], "cat", "animal"),
    (["an old man", "an elderly man"], "old man", "person"),
    (["two friends", "a pair of friends"], "friends", "people"),
    (["a chef", "a cook"], "chef", "person"),
    (["a group of tourists", "some tourists"], "tourists", "people"),
]
ACTIONS = [
    (["is riding a bicycle", "rides a bike", "is cycling"], "riding a bicycle", "is sleeping in bed"),
    (["is playing football", "plays soccer", "is kicking a ball"], "playing football", "is reading a book indoors"),
    (["is eating lunch", "has lunch", "is having a meal"], "eating", "is running a marathon"),
    (["is swimming", "swims", "is taking a swim"], "swimming", "is sitting at a desk"),
    (["is reading a newspaper", "reads the paper", "is looking at a newspaper"], "reading", "is dancing at a party"),
    (["is walking", "takes a walk", "is strolling"], "walking", "is lying on the sofa"),
    (["is taking photos", "takes pictures", "is photographing the view"], "taking photos", "is washing dishes"),
    (["is painting a picture", "paints", "is making a painting"], "painting", "is driving a truck"),
    (["is climbing a wall", "climbs a rock wall", "is rock climbing"], "climbing", "is watching television"),
    (["is singing", "sings a song", "is performing a song"], "singing", "is fast asleep"),
]
PLACES = [
    (["in the park", "at the park"], "park"),
    (["on the beach", "by the sea", "at the beach"], "beach"),
    (["in the city center", "downtown", "in the middle of town"], "city"),
    (["in the mountains", "on a mountain trail"], "mountains"),
    (["in a kitchen", "inside a kitchen"], "kitchen"),
    (["near a river", "by the river", "along a riverbank"], "river"),
    (["in the snow", "on a snowy field"], "snow"),
    (["at a market", "in a busy market"], "market"),
]
TIMES = ["", "in the morning", "at sunset", "on a rainy day", "at night", "on a sunny afternoon"]
ADJ = {
    "big": ["large", "huge"],
    "small": ["little", "tiny"],
    "quickly": ["fast", "rapidly"],
    "happy": ["glad", "cheerful"],
}


def cap(s: str) -> str:
    return s[0].upper() + s[1:]


def art(noun: str) -> str:
    """The noun with its indefinite article ('some' for plurals)."""
    if noun in ("people",):
        return f"some {noun}"
    return f"{'an' if noun[0] in 'aeiou' else 'a'} {noun}"


def scene(rng):
    return rng.choice(SUBJECTS), rng.choice(ACTIONS), rng.choice(PLACES), rng.choice(TIMES)


def describe(rng, sc, variant: int) -> str:
    (subj_forms, subj_noun, subj_kind), (act_forms, act_noun, _), (place_forms, place_noun), when = sc
    subj, act, place = rng.choice(subj_forms), rng.choice(act_forms), rng.choice(place_forms)
    tail = f" {when}" if when else ""
    v = variant % 5
    if v == 0:
        return cap(f"{subj} {act} {place}{tail}.")
    if v == 1:
        return cap(f"{place}, {subj} {act}{tail}.")
    if v == 2:
        return cap(f"there is {subj} {act_noun} {place}{tail}.")
    if v == 3:
        return cap(f"{art(subj_kind)} {act_noun} at the {place_noun}.")
    return cap(f"a photo of {subj} {act_noun} {place}.")


# --- corpora -------------------------------------------------------------------------------
def paraphrases(rng, n):
    """Symmetric paraphrase pairs: the same scene said two ways, or a fact restated."""
    out = []
    while len(out) < n:
        if rng.random() < 0.7:
            sc = scene(rng)
            a, b = rng.sample(range(5), 2)
            s1, s2 = describe(rng, sc, a), describe(rng, sc, b)
        else:
            country, capital, cont = rng.choice(CAPITALS)
            forms = [
                f"{capital} is the capital of {country}.",
                f"The capital city of {country} is {capital}.",
                f"{country}'s capital is {capital}.",
                f"{capital} is {country}'s capital city, in {cont}.",
            ]
            s1, s2 = rng.sample(forms, 2)
        if s1 != s2:
            out.append([s1, s2])
    return out


def qa_facts(rng):
    """(question, answer, topic) triples over all fact tables, with several question templates."""
    items = []
    for country, capital, cont in CAPITALS:
        for q in (
            f"What is the capital of {country}?",
            f"Which city is the capital of {country}?",
            f"capital of {country}",
            f"{country} capital city",
        ):
            items.append((q, f"{capital} is the capital of {country}, a country in {cont}.", ("capital", country)))
        items.append(
            (
                f"Which country has {capital} as its capital?",
                f"{capital} is the capital of {country}.",
                ("capital", country),
            )
        )
    for river, country, sea in RIVERS:
        for q in (
            f"Where does the {river} river flow into?",
            f"What sea does the {river} empty into?",
            f"{river} river mouth",
        ):
            items.append((q, f"The {river} flows through {country} and empties into {sea}.", ("river", river)))
    for thing, who, year in INVENTIONS:
        for q in (f"Who invented {thing}?", f"Who is credited with inventing {thing}?", f"inventor of {thing}"):
            items.append((q, f"{cap(thing)} was invented by {who} in {year}.", ("invention", thing)))
        items.append((f"When was {thing} invented?", f"{who} invented {thing} in {year}.", ("invention", thing)))
    for animal, sound, food, home in ANIMALS:
        items.append((f"What sound does a {animal} make?", f"A {animal} makes a {sound} sound.", ("animal", animal)))
        items.append((f"What do {animal}s eat?", f"{cap(animal)}s mostly eat {food}.", ("animal", animal)))
        items.append((f"Where do {animal}s live?", f"{cap(animal)}s usually live in {home}.", ("animal", animal)))
    for planet, order, note in PLANETS:
        items.append(
            (
                f"Which planet is {order} from the sun?",
                f"{planet} is the {order} planet from the sun.",
                ("planet", planet),
            )
        )
        items.append((f"Tell me about {planet}", f"{planet} is {note}.", ("planet", planet)))
    return items


def qa_pairs(rng, n):
    items = qa_facts(rng)
    lead = ["", "Q: ", "Question: "]
    return [[rng.choice(lead) + q, a] for q, a, _ in (rng.choice(items) for _ in range(n))]


def caption_sets(rng, n):
    out = []
    for _ in range(n):
        sc = scene(rng)
        k = rng.choice([4, 5, 5])
        out.append({"set": [describe(rng, sc, v) for v in rng.sample(range(5), k)]})
    return out


def nli_triplets(rng, n):
    out = []
    for _ in range(n):
        sc = scene(rng)
        (subj_forms, _, kind), (act_forms, act_noun, contra), (place_forms, place_noun), when = sc
        anchor = describe(rng, sc, rng.choice([0, 1]))
        be = "are" if kind == "people" else "is"
        entailed = rng.choice(
            [
                cap(f"{art(kind)} {be} {'indoors' if place_noun == 'kitchen' else 'outside'}."),
                cap(f"someone is {act_noun}."),
                cap(f"{rng.choice(subj_forms)} is at the {place_noun}."),
            ]
        )
        contradiction = rng.choice(
            [
                cap(f"{rng.choice(subj_forms)} {contra}."),
                cap(f"nobody is {act_noun}."),
                cap(f"{rng.choice(subj_forms)} {rng.choice(act_forms)} on the moon."),
            ]
        )
        out.append([anchor, entailed, contradiction])
    return out


def search_with_negatives(rng, n):
    items = qa_facts(rng)
    by_topic: dict = {}
    for q, a, t in items:
        by_topic.setdefault(t, []).append((q, a))
    topics = sorted(by_topic)
    out = []
    for _ in range(n):
        t = rng.choice(topics)
        q, a = rng.choice(by_topic[t])
        pos = sorted({a} | {x for _, x in rng.sample(by_topic[t], min(2, len(by_topic[t])))})
        # Hard negatives: same kind of fact, other subject; plus one random other fact.
        same_kind = [u for u in topics if u[0] == t[0] and u != t]
        negs = [rng.choice(by_topic[u])[1] for u in rng.sample(same_kind, min(2, len(same_kind)))]
        negs.append(rng.choice(items)[1])
        negs = [x for x in dict.fromkeys(negs) if x not in pos]
        if negs:
            out.append({"query": q.lower().rstrip("?"), "pos": pos, "neg": negs})
    return out


def faq_queries(rng, n):
    items = qa_facts(rng)
    by_topic: dict = {}
    for q, a, t in items:
        by_topic.setdefault(t, []).append((q, a))
    out = []
    for _ in range(n):
        q, a, t = rng.choice(items)
        others = [x for _, x in by_topic[t] if x != a]
        pos = [a] + rng.sample(others, min(len(others), rng.randint(0, 2)))
        out.append({"query": q, "pos": pos})
    return out


CORPORA = [
    # name, shape, weight, symmetric, generator, n lines, files (split into parts)
    ("sample_paraphrases", "pair", 3, True, paraphrases, 3000, 1, "Scene and fact paraphrases (symmetric pairs)."),
    ("sample_qa", "pair", 3, False, qa_pairs, 2400, 2, "Question -> answer pairs over fact tables; two files."),
    ("sample_captions", "set", 2, False, caption_sets, 1500, 1, "One scene described 4-5 ways per line."),
    (
        "sample_nli",
        "triplet",
        2,
        False,
        nli_triplets,
        2000,
        1,
        "Anchor, entailed sentence, contradiction (hard negative).",
    ),
    ("sample_faq", "query", 1, False, faq_queries, 1000, 1, "Query with one to three relevant answers."),
    (
        "sample_search",
        "query_with_negatives",
        2,
        False,
        search_with_negatives,
        1000,
        1,
        "Search query, relevant passages, irrelevant passages (same-kind hard negatives).",
    ),
]


def beir_sample(rng):
    """A small retrieval set in the BEIR format (corpus, queries, qrels): one document per fact of the
    fact tables (titled by its subject) with a question each, and scenes described four ways, queried
    by a fifth description (relevant: the four; scenes sharing a subject, action or place are the hard
    part). qrels: 1 = relevant; 0 = same subject, judged not relevant. The facts and scenes are those
    the sample corpora train on: the set shows the evaluation's mechanics, not a held-out score."""
    docs, queries, qrels = [], [], []

    def doc(title, text):
        docs.append({"_id": f"d{len(docs):03d}", "title": title, "text": text})
        return docs[-1]["_id"]

    def ask(text, relevant, judged_not=()):
        qid = f"q{len(queries):03d}"
        queries.append({"_id": qid, "text": text})
        qrels.extend([(qid, d, 1) for d in relevant] + [(qid, d, 0) for d in judged_not])

    for country, capital, cont in CAPITALS:
        d = doc(country, f"{capital} is the capital of {country}, a country in {cont}.")
        ask(
            rng.choice(
                [
                    f"What is the capital of {country}?",
                    f"capital of {country}".lower(),
                    f"Which country has {capital} as its capital?",
                ]
            ),
            [d],
        )
    for river, country, sea in RIVERS:
        d = doc(f"{river} (river)", f"The {river} flows through {country} and empties into {sea}.")
        ask(rng.choice([f"Where does the {river} river flow into?", f"{river} river mouth".lower()]), [d])
    for thing, who, year in INVENTIONS:
        d = doc(cap(thing), f"{cap(thing)} was invented by {who} in {year}.")
        ask(rng.choice([f"Who invented {thing}?", f"When was {thing} invented?", f"inventor of {thing}"]), [d])
    for animal, sound, food, home in ANIMALS:
        ids = [
            doc(cap(animal), t)
            for t in (
                f"A {animal} makes a {sound} sound.",
                f"{cap(animal)}s mostly eat {food}.",
                f"{cap(animal)}s usually live in {home}.",
            )
        ]
        i = rng.randrange(3)
        ask(
            (f"What sound does a {animal} make?", f"What do {animal}s eat?", f"Where do {animal}s live?")[i],
            [ids[i]],
            [d for j, d in enumerate(ids) if j != i],
        )
    for planet, order, note in PLANETS:
        ids = [doc(planet, f"{planet} is the {order} planet from the sun."), doc(planet, f"{planet} is {note}.")]
        if rng.random() < 0.5:
            ask(f"Which planet is {order} from the sun?", ids[:1], ids[1:])
        else:
            ask(f"Tell me about {planet}", ids)
    seen_scenes, seen_texts = set(), {d["text"] for d in docs}
    while len(seen_scenes) < 45:
        sc = scene(rng)
        key = (sc[0][1], sc[1][1], sc[2][1])  # subject, action, place
        texts = [describe(rng, sc, v) for v in rng.sample(range(5), 5)]
        if key in seen_scenes or len(set(texts)) < 5 or seen_texts & set(texts):
            continue
        seen_scenes.add(key)
        seen_texts.update(texts)
        ask(texts[0], [doc("", t) for t in texts[1:]])
    return docs, queries, qrels


def plant(name: str, rows: list, ir) -> list:
    """A few lines the cleaning stages must remove, appended (the generated lines stay as they were):
    duplicates of the symmetric paraphrases (swapped, case, spacing, Unicode variants) and question /
    answer pairs whose question is a test query of the BEIR set, so the demo's manifest, run with
    --decontaminate=samples/beir/sample_ir, shows both counts. (The templated corpora repeat tuples
    and facts of the BEIR set by themselves too.)"""
    if name == "sample_paraphrases":
        (a0, b0), (a1, b1), (a2, b2), (a3, b3) = rows[:4]
        full_width = "".join(chr(ord(c) + 0xFEE0) if "A" <= c <= "Z" else c for c in a3)  # NFKC folds these
        return rows + [
            [b0, a0],
            [a1.upper(), b1],
            ["  " + a2.replace(" ", "   "), b2 + " "],
            [full_width, b3.replace(" ", "\u00a0", 1)],
        ]
    if name == "sample_qa":
        docs, queries, qrels = ir
        text_of = {d["_id"]: (d["title"] + " " + d["text"]).strip() for d in docs}
        relevant = {q: d for q, d, score in qrels if score > 0}
        return rows + [
            [q["text"].upper() if i % 2 else q["text"], text_of[relevant[q["_id"]]]] for i, q in enumerate(queries[:3])
        ]
    return rows


def write_beir(out_dir: str, docs, queries, qrels) -> None:
    os.makedirs(os.path.join(out_dir, "qrels"), exist_ok=True)
    for name, rows in (("corpus.jsonl", docs), ("queries.jsonl", queries)):
        with open(os.path.join(out_dir, name), "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    with open(os.path.join(out_dir, "qrels", "test.tsv"), "w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        f.writelines(f"{q}\t{d}\t{s}\n" for q, d, s in qrels)


def write_jsonl_gz(path: str, rows) -> None:
    # mtime=0 and a fixed file name in the header keep the bytes reproducible.
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
        for r in rows:
            f.write((json.dumps(r, ensure_ascii=False) + "\n").encode("utf-8"))


def main() -> None:
    out_dir = os.path.join(HERE, "corpora")
    os.makedirs(out_dir, exist_ok=True)
    config = []
    # The demo's retrieval set (BEIR format; trainer/evaluators/beir.py), from its own seed.
    ir = beir_sample(random.Random(SEED + len(CORPORA)))
    for i, (name, shape, weight, symmetric, gen, n, parts, desc) in enumerate(CORPORA):
        rows = plant(name, gen(random.Random(SEED + i), n), ir)
        if parts == 1:
            files = [f"{name}.jsonl.gz"]
            write_jsonl_gz(os.path.join(out_dir, files[0]), rows)
            pattern = files[0]
        else:
            step = (len(rows) + parts - 1) // parts
            for p in range(parts):
                write_jsonl_gz(os.path.join(out_dir, f"{name}-{p}.jsonl.gz"), rows[p * step : (p + 1) * step])
            pattern = f"{name}-*.jsonl.gz"
        config.append(
            {
                "name": name,
                "files": [pattern],
                "record_format": shape,
                "weight": weight,
                "expected_lines": len(rows),
                "symmetric": symmetric,
                "description": desc,
            }
        )
    with open(os.path.join(HERE, "data_config.json"), "w") as f:
        json.dump(
            {
                "description": "Bundled sample corpora (samples/make_samples.py); input root: samples/corpora",
                "corpora": config,
            },
            f,
            indent=2,
        )
        f.write("\n")
    # The demo's retrieval set (BEIR format; trainer/evaluators/ir_data.py), from its own seed.
    write_beir(os.path.join(HERE, "beir", "sample_ir"), *ir)


if __name__ == "__main__":
    main()
