"""Tests of trainer/data/batches.py on small TFRecord files written here with the shared schema.

Token ids are synthetic and self-describing: every text is [CLS, 1000 + corpus, 3000 + record // 1000,
5000 + record % 1000, 2000 + text index, filler..., SEP], so a batch row can be decoded back to the record
and text it came from and checked against what was written.
"""

from __future__ import annotations

import collections
import json
import os

import numpy as np
import pytest

from pipeline import record_schema as rs
from pipeline.manifest import ManifestError, load_manifest
from pipeline.tensorflow_import import import_tensorflow
from trainer.config import TrainConfig
from trainer.data import padding, records
from trainer.data.batches import BatchStream, DataError
from trainer.data.corpus_schedule import CorpusSchedule
from trainer.evaluators.retrieval import validation_pairs
from trainer.multihost import merge_states

tf = import_tensorflow()

CLS, SEP, PAD, FILL = 101, 102, 0, 7

# name, shape, weight, symmetric, train records, files
CORPORA = [
    ("pairs", "pair", 3.0, True, 300, 3),
    ("trips", "triplet", 2.0, False, 200, 2),
    ("sets", "set", 1.0, False, 150, 2),
    ("queries", "query", 1.0, False, 150, 1),
    ("qneg", "query_with_negatives", 1.0, False, 150, 2),
]


def text_ids(ci: int, rec: int, t: int, length: int) -> list[int]:
    body = [1000 + ci, 3000 + rec // 1000, 5000 + rec % 1000, 2000 + t]
    return [CLS] + body + [FILL] * max(0, length - len(body) - 2) + [SEP]


def decode_row(ids: np.ndarray, mask: np.ndarray) -> tuple[int, int, int]:
    row = ids[mask.astype(bool)]
    assert row[0] == CLS and row[-1] == SEP
    return int(row[1] - 1000), int((row[2] - 3000) * 1000 + row[3] - 5000), int(row[4] - 2000)


def text_key(ci, rec, t):
    return f"c{ci}/r{rec}/t{t}"


def record_texts(ci: int, shape: str, rec: int, long_every: int = 0):
    """(roles, lengths) of record `rec` of a corpus of `shape`."""
    if shape == "pair":
        roles = [rs.ROLE_ANCHOR, rs.ROLE_POSITIVE]
    elif shape == "triplet":
        roles = [rs.ROLE_ANCHOR, rs.ROLE_POSITIVE, rs.ROLE_NEGATIVE]
    elif shape == "set":
        roles = [rs.ROLE_MEMBER] * (2 + rec % 4)
    elif shape == "query":
        roles = [rs.ROLE_ANCHOR] + [rs.ROLE_POSITIVE] * (1 + rec % 3)
    else:
        roles = [rs.ROLE_ANCHOR] + [rs.ROLE_POSITIVE] * (1 + rec % 2) + [rs.ROLE_NEGATIVE] * (1 + rec % 3)
    lengths = [7 + (rec * 7 + t * 5) % 30 for t in range(len(roles))]
    if long_every and rec % long_every == 0:
        lengths[0] = 150
    return roles, lengths


def write_dataset(out_dir, corpora=CORPORA, long_every=0, pad_id=PAD, dup_every=0):
    """Writes train + validation TFRecords and manifest.json in the Beam job's documented layout."""
    entries = []
    for ci, (name, shape, weight, symmetric, n, n_files) in enumerate(corpora):
        os.makedirs(os.path.join(out_dir, name), exist_ok=True)
        train_files, val_files = [], []
        for split, count, files in (("train", n, train_files), ("validation", 10, val_files)):
            recs = range(count) if split == "train" else range(100_000, 100_000 + count)
            k = n_files if split == "train" else 1
            writers = []
            for s in range(k):
                rel = f"{name}/{split}-{s:05d}-of-{k:05d}{rs.FILE_SUFFIX}"
                files.append(rel)
                writers.append(tf.io.TFRecordWriter(os.path.join(out_dir, rel), options=rs.COMPRESSION))
            for j, rec in enumerate(recs):
                roles, lengths = record_texts(ci, shape, rec, long_every)
                # dup_every: that record's anchor repeats record 0's anchor text (a planted duplicate).
                src = [(0 if dup_every and t == 0 and rec % dup_every == 0 else rec, t) for t in range(len(roles))]
                ids = [
                    text_ids(ci, r, t, lengths[t] if r == rec else record_texts(ci, shape, r, long_every)[1][t])
                    for r, t in src
                ]
                fps = [rs.fingerprint(text_key(ci, r, t)) for r, t in src]
                writers[j % k].write(rs.encode_record(ids, roles, fps))
            for w in writers:
                w.close()
        entries.append(
            {
                "name": name,
                "record_format": shape,
                "weight": weight,
                "symmetric": symmetric,
                "files": [f"{name}.jsonl.gz"],
                "lines_read": n + 10,
                "train_examples": n,
                "validation_examples": 10,
                "rejected": {"total": 0, "by_reason": {}},
                "train_files": train_files,
                "validation_files": val_files,
                "token_lengths": {"texts": 0, "mean": 0, "p50": 0, "p95": 0, "max": 0, "truncated_share": 0},
            }
        )
    manifest = {
        "schema_version": 1,
        "created": "test",
        "max_seq_length": 128,
        "validation_fraction": 0.01,
        "compression": rs.COMPRESSION,
        "tokenizer": {"name": "synthetic", "vocab_fingerprint": "0", "vocab_size": 3000, "pad_token_id": pad_id},
        "corpora": entries,
        "totals": {},
    }
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    return out_dir


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_dataset(str(tmp_path_factory.mktemp("input")))


def make_cfg(**kw):
    base = dict(batch_size=8, seed=3, shuffle_buffer=64, bucket_lengths=(16, 32, 64), max_seq_length=128)
    base.update(kw)
    return TrainConfig(**base)


def take(pipe, n):
    out = [next(pipe) for _ in range(n)]
    return out


SHAPE_OF = {name: shape for name, shape, *_ in CORPORA}
INDEX_OF = {name: i for i, (name, *_) in enumerate(CORPORA)}


def fold(ci, rec, t):
    return int(padding.fold_fingerprint(np.array([rs.fingerprint(text_key(ci, rec, t))]))[0])


def check_batch(batch, corpora=CORPORA, buckets=(16, 32, 64, 128), pad=PAD):
    """Asserts a batch's layout and that every row decodes to the text written; returns the decoded rows
    as [(corpus index, record, anchor text, positive text, negative text or None)]."""
    shape_of = {c[0]: c[1] for c in corpora}
    B = batch["anchor_ids"].shape[0]
    mixed = batch["corpus"] == "mixed"
    has_neg = not mixed and shape_of[batch["corpus"]] in ("triplet", "query_with_negatives")
    cols = ("anchor", "positive", "negative") if has_neg else ("anchor", "positive")
    assert ("negative_ids" in batch) == has_neg
    L = batch["anchor_ids"].shape[1]
    longest = max(int(batch[f"{c}_mask"].sum(1).max()) for c in cols)
    assert L == padding.bucket_length(longest, buckets)
    rows = []
    for c in cols:
        ids, mask = batch[f"{c}_ids"], batch[f"{c}_mask"]
        assert ids.dtype == np.int32 and mask.dtype == np.int32 and ids.shape == (B, L) == mask.shape
        assert batch[f"{c}_fp"].dtype == np.int32 and batch[f"{c}_fp"].shape == (B,)
        assert np.all(ids[mask == 0] == pad) and np.all(ids[mask == 1] != pad)
        assert np.all(np.diff(mask, axis=1) <= 0)  # padding only at the end
    for i in range(B):
        dec = {c: decode_row(batch[f"{c}_ids"][i], batch[f"{c}_mask"][i]) for c in cols}
        ci, rec, _ = dec["anchor"]
        name, shape = corpora[ci][0], corpora[ci][1]
        if not mixed:
            assert name == batch["corpus"]
        assert all(d[0] == ci and d[1] == rec for d in dec.values()), "texts of one example come from one record"
        roles, lengths = record_texts(ci, shape, rec)
        for c, (_, _, t) in dec.items():
            assert batch[f"{c}_mask"][i].sum() == min(lengths[t], buckets[-1])
            assert batch[f"{c}_fp"][i] == fold(ci, rec, t)
        ta, tp = dec["anchor"][2], dec["positive"][2]
        tn = dec["negative"][2] if has_neg else None
        if shape == "pair":
            assert {ta, tp} == {0, 1}
        elif shape == "triplet":
            assert (ta, tp) == (0, 1) and (tn in (2, None))
        elif shape == "set":
            assert ta != tp and roles[ta] == roles[tp] == rs.ROLE_MEMBER
        else:
            assert ta == 0 and roles[tp] == rs.ROLE_POSITIVE
            if has_neg:
                assert roles[tn] == rs.ROLE_NEGATIVE
        rows.append((ci, rec, ta, tp, tn))
    return rows


@pytest.fixture(scope="module")
def straight_run(data_dir):
    pipe = BatchStream(data_dir, make_cfg())
    batches = take(pipe, 100)
    pipe.close()
    return batches


def test_every_shape_yields_batches_that_decode_to_the_records_written(straight_run):
    seen = collections.defaultdict(list)
    for batch in straight_run:
        for row in check_batch(batch):
            seen[CORPORA[row[0]][1]].append(row)
    assert set(seen) == set(SHAPE_OF.values())
    # Fresh draws: query lists use more than their first positive, sets more than one member pair.
    assert len({r[3] for r in seen["query"]}) == 3
    assert len({(r[2], r[3]) for r in seen["set"]}) > 5
    # Which negative of the record's 1..3 was drawn (texts: anchor, 1-2 positives, then negatives).
    neg_rank = {r[4] - 1 - (1 + r[1] % 2) for r in seen["query_with_negatives"]}
    assert neg_rank == {0, 1, 2}
    # An epoch is a permutation of the corpus's records; the next epoch starts over.
    recs = [r[1] for r in seen["pair"]]
    assert len(recs) > 300 and sorted(recs[:300]) == list(range(300)) and recs[300:] != recs[: len(recs) - 300]


def test_symmetric_pairs_are_swapped_about_half_the_time_and_others_never(straight_run):
    swapped = collections.defaultdict(list)
    for batch in straight_run:
        for ci, rec, ta, tp, tn in check_batch(batch):
            if CORPORA[ci][1] in ("pair", "triplet", "query", "query_with_negatives"):
                swapped[CORPORA[ci][0]].append(ta != 0)
    pairs = np.array(swapped["pairs"])
    assert pairs.size > 150 and 0.38 < pairs.mean() < 0.62
    for name in ("trips", "queries", "qneg"):
        assert len(swapped[name]) > 20 and not any(swapped[name])


def test_batches_follow_the_seeded_schedule_and_weights(data_dir):
    cfg = make_cfg(batch_size=2, shuffle_buffer=16)
    pipe = BatchStream(data_dir, cfg, prefetch_batches=4)
    names = [next(pipe)["corpus"] for _ in range(2000)]
    pipe.close()
    sched = CorpusSchedule([c[2] for c in CORPORA], cfg.seed)
    assert names == [CORPORA[sched.corpus_at(s)][0] for s in range(2000)]
    counts = collections.Counter(names)
    total = sum(c[2] for c in CORPORA)
    for name, _, weight, *_ in CORPORA:
        p = weight / total
        assert abs(counts[name] / 2000 - p) < 4 * np.sqrt(p * (1 - p) / 2000), (name, counts[name])


def batches_equal(a, b):
    return a.keys() == b.keys() and all((a[k] == b[k]) if k == "corpus" else np.array_equal(a[k], b[k]) for k in a)


def test_same_seed_same_batches_different_seed_different(data_dir, straight_run):
    pipe = BatchStream(data_dir, make_cfg(), prefetch_batches=0)
    again = take(pipe, 15)
    assert all(batches_equal(x, y) for x, y in zip(again, straight_run[:15]))
    other = take(BatchStream(data_dir, make_cfg(seed=4)), 15)
    assert [b["corpus"] for b in other] != [b["corpus"] for b in again]
    same_corpus = [(x, y) for x, y in zip(other, again) if x["corpus"] == y["corpus"]]
    assert same_corpus and not all(batches_equal(x, y) for x, y in same_corpus)


def records_seen(batches):
    out = collections.defaultdict(set)
    for b in batches:
        for ci, rec, *_ in check_batch(b):
            out[CORPORA[ci][0]].add(rec)
    return out


def test_hosts_read_disjoint_shards(data_dir):
    cfg = make_cfg(batch_size=16)  # 8 per host
    names = ["pairs", "trips", "queries"]
    seen = [records_seen(take(BatchStream(data_dir, cfg, i, 2, corpora=names), 40)) for i in range(2)]
    # "pairs" has 3 files (record j in file j % 3): host 0 reads files 0 and 2, host 1 file 1.
    assert seen[0]["pairs"] and {r % 3 for r in seen[0]["pairs"]} <= {0, 2}
    assert seen[1]["pairs"] and {r % 3 for r in seen[1]["pairs"]} == {1}
    # "queries" has 1 file for 2 hosts: records are sharded instead; still disjoint.
    for name in ("pairs", "trips", "queries"):
        assert seen[0][name] and seen[1][name] and not seen[0][name] & seen[1][name], name


RESUME_CORPORA = [
    ("big", "pair", 5.0, True, 700, 3),
    ("small", "set", 1.0, False, 30, 1),
    ("trip", "triplet", 1.0, False, 50, 2),
]


@pytest.mark.parametrize("mixed_share", [0.0, 0.3])
def test_exact_resume_from_state(tmp_path, monkeypatch, mixed_share):
    # Small chunks, so that 20 batches of small data cross chunk boundaries (same code path).
    monkeypatch.setattr(records, "CHUNK", 48)
    d = write_dataset(str(tmp_path), RESUME_CORPORA)
    cfg = make_cfg(batch_size=40, mixed_batch_share=mixed_share, shuffle_buffer=100)
    straight = take(BatchStream(d, cfg), 20)
    first = BatchStream(d, cfg)
    part1 = take(first, 10)
    state = json.loads(json.dumps(first.state()))
    first.close()
    assert state["step"] == 10 and len(json.dumps(state)) < 1000
    second = BatchStream(d, cfg, state=state)
    part2 = take(second, 10)
    assert [b["corpus"] for b in straight] == [b["corpus"] for b in part1 + part2]
    for x, y in zip(straight, part1 + part2):
        assert batches_equal(x, y)
    # The run crossed epochs of the small corpus, the restart fell mid-chunk of the big one.
    assert state["corpora"]["big"][1] > 48 and state["corpora"]["big"][1] % 48 != 0 and state["chunk"] == 48
    end = second.state()["corpora"]
    assert end["small"][0] >= 1
    for b in straight:
        check_batch(b, RESUME_CORPORA)


def test_multi_host_resume_from_merged_states(data_dir):
    cfg = make_cfg(batch_size=16)
    names = ["pairs", "queries"]  # file-sharded and record-sharded
    hosts = [BatchStream(data_dir, cfg, i, 2, corpora=names, prefetch_batches=0) for i in range(2)]
    straight = [take(h, 6) for h in hosts]
    hosts = [BatchStream(data_dir, cfg, i, 2, corpora=names, prefetch_batches=0) for i in range(2)]
    for h in hosts:
        take(h, 3)
    merged = json.loads(json.dumps(merge_states([h.state() for h in reversed(hosts)])))
    assert [h["process_index"] for h in merged["hosts"]] == [0, 1]  # ordered by host, whatever the input order
    for i in range(2):
        rest = take(BatchStream(data_dir, cfg, i, 2, corpora=names, state=merged), 3)
        assert all(batches_equal(x, y) for x, y in zip(rest, straight[i][3:]))
    with pytest.raises(DataError, match="host positions"):
        BatchStream(data_dir, cfg, 0, 1, corpora=names, batch_size=8, state=merged)


def test_state_of_another_run_is_refused(data_dir):
    pipe = BatchStream(data_dir, make_cfg(), prefetch_batches=0)
    next(pipe)
    state = pipe.state()
    with pytest.raises(DataError, match="seed"):
        BatchStream(data_dir, make_cfg(seed=99), state=state)
    with pytest.raises(DataError, match="process_count"):
        BatchStream(data_dir, make_cfg(batch_size=16), 0, 2, batch_size=8, state=state)


def test_mixed_batches_draw_examples_from_all_corpora_by_schedule(data_dir):
    cfg = make_cfg(mixed_batch_share=1.0, batch_size=16)
    pipe = BatchStream(data_dir, cfg, prefetch_batches=0)
    sched = CorpusSchedule([c[2] for c in CORPORA], cfg.seed, 1.0)
    for step in range(5):
        batch = next(pipe)
        assert batch["corpus"] == "mixed" and "negative_ids" not in batch
        rows = check_batch(batch)
        assert [r[0] for r in rows] == list(sched.mixed_choices(step, 16))
        assert len({r[0] for r in rows}) >= 3


def test_bucket_padding_cut_at_max_seq_length_and_pad_id(tmp_path):
    d = write_dataset(str(tmp_path), CORPORA[:2], pad_id=1)
    cfg = make_cfg(max_seq_length=24, bucket_lengths=(16, 32, 64), batch_size=1)  # B=1: short batches occur
    lengths_seen = set()
    for batch in take(BatchStream(d, cfg), 60):
        L = batch["anchor_ids"].shape[1]
        assert L in (16, 24)  # buckets capped at max_seq_length, which becomes the last bucket
        lengths_seen.add(L)
        for c in ("anchor", "positive"):
            ids, mask = batch[f"{c}_ids"], batch[f"{c}_mask"]
            assert np.all(ids[mask == 0] == 1)
            n = mask.sum(1)
            assert np.all(n <= 24)
            last = ids[np.arange(len(n)), n - 1]
            assert np.all(last == SEP)  # the final token survives the cut
            for i in range(len(n)):
                ci, rec, t = decode_row(ids[i], mask[i])
                written = record_texts(ci, CORPORA[ci][1], rec)[1][t]
                assert n[i] == min(written, 24)
                # A cut row keeps its first 23 tokens and the final SEP.
                assert list(ids[i, : n[i] - 1]) == text_ids(ci, rec, t, written)[: n[i] - 1]
    assert lengths_seen == {16, 24}


def test_in_batch_duplicate_texts_are_skipped(tmp_path):
    corpora = [("dups", "pair", 1.0, False, 200, 1)]
    d = write_dataset(str(tmp_path), corpora, dup_every=3)
    pipe = BatchStream(d, make_cfg(), prefetch_batches=0)
    for batch in take(pipe, 10):
        fps = np.concatenate([batch["anchor_fp"], batch["positive_fp"]])
        assert np.unique(fps).size == fps.size
    assert pipe.state()["duplicates_skipped"] > 0
    plain = take(BatchStream(d, make_cfg(), dedup=False), 10)
    assert any(np.unique(b["anchor_fp"]).size < 8 for b in plain)


def test_validation_pairs_are_deterministic_first_texts(data_dir):
    manifest = load_manifest(data_dir)
    for ci, (name, shape, *_) in enumerate(CORPORA):
        anchors, positives = validation_pairs(manifest.corpus(name), manifest.compression, 4)
        assert len(anchors) == len(positives) == 4
        want = (0, 1)  # first positive of query shapes, first two members of sets
        for k, (a, p) in enumerate(zip(anchors, positives)):
            ones = np.ones(len(a), np.int32)
            assert decode_row(np.array(a), ones)[0] == ci
            assert decode_row(np.array(a), ones)[2] == want[0]
            assert decode_row(np.array(p), np.ones(len(p), np.int32))[2] == want[1]
            assert decode_row(np.array(a), ones)[1] == 100_000 + k  # file order
        assert validation_pairs(manifest.corpus(name), manifest.compression, 4) == (anchors, positives)
    a, _ = validation_pairs(manifest.corpus("pairs"), manifest.compression, 100, max_seq_length=10)
    assert len(a) == 10 and max(len(x) for x in a) <= 10 and all(x[-1] == SEP for x in a)


def test_missing_or_unusable_data_fails_clearly(tmp_path, data_dir):
    with pytest.raises(ManifestError, match="no manifest"):
        BatchStream(str(tmp_path), make_cfg())
    with pytest.raises(DataError, match="divisible"):
        BatchStream(data_dir, make_cfg(batch_size=9), 0, 2)
    with pytest.raises(DataError, match="not in the manifest"):
        BatchStream(data_dir, make_cfg(), corpora=["nope"])
    assert load_manifest(data_dir).pad_token_id == PAD


def test_reads_records_through_tf_gfile_filesystems(data_dir, tmp_path):
    """Records go through tf.io.gfile (gs:// in real runs; its in-memory ram:// here), wherever the
    manifest lives: train files given as URLs are read as they are."""
    root = "ram://input_pipeline_test"
    for dirpath, _, files in os.walk(data_dir):
        rel = os.path.relpath(dirpath, data_dir)
        tf.io.gfile.makedirs(root if rel == "." else f"{root}/{rel}")
        for f in files:
            tf.io.gfile.copy(
                os.path.join(dirpath, f), f"{root}/{f}" if rel == "." else f"{root}/{rel}/{f}", overwrite=True
            )
    with open(os.path.join(data_dir, "manifest.json")) as f:
        manifest = json.load(f)
    for c in manifest["corpora"]:
        c["train_files"] = [f"{root}/{rel}" for rel in c["train_files"]]
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    pipe = BatchStream(str(tmp_path), make_cfg(), corpora=["trips"], prefetch_batches=0)
    assert all(f.startswith(root) for f in pipe.corpora[0].files)
    batch = next(pipe)
    assert batch["corpus"] == "trips"
    check_batch(batch)
    np.testing.assert_array_equal(
        batch["anchor_ids"],
        next(BatchStream(data_dir, make_cfg(), corpora=["trips"], prefetch_batches=0))["anchor_ids"],
    )


def test_records_that_do_not_match_the_declared_shape_fail_with_the_corpus_name(tmp_path):
    d = write_dataset(str(tmp_path), [("liar", "pair", 1.0, False, 20, 1)])
    with open(os.path.join(d, "manifest.json")) as f:
        manifest = json.load(f)
    manifest["corpora"][0]["record_format"] = "triplet"  # the records hold pairs
    with open(os.path.join(d, "manifest.json"), "w") as f:
        json.dump(manifest, f)
    with pytest.raises(tf.errors.InvalidArgumentError, match="corpus liar: a triplet record has no negative"):
        next(BatchStream(d, make_cfg()))


@pytest.mark.parametrize("prefetch", [0, 2])
def test_transform_runs_on_every_batch_and_keeps_the_corpus(data_dir, prefetch):
    threads = []

    def transform(batch):  # what the trainer passes: a function of the batch without its corpus name
        import threading

        assert "corpus" not in batch
        threads.append(threading.current_thread().name)
        return {"n_rows": np.int32(batch["anchor_ids"].shape[0]), **batch}

    plain = BatchStream(data_dir, make_cfg(), prefetch_batches=prefetch)
    pipe = BatchStream(data_dir, make_cfg(), prefetch_batches=prefetch, transform=transform)
    for _ in range(3):
        want, got = next(plain), next(pipe)
        assert got["n_rows"] == 8 and got["corpus"] == want["corpus"]
        np.testing.assert_array_equal(got["anchor_ids"], want["anchor_ids"])
    assert pipe.state() == plain.state()
    # With prefetching the transform runs on the pipeline's thread, overlapping the caller's work.
    assert set(threads) == ({"input-pipeline"} if prefetch else {"MainThread"})
    plain.close()
    pipe.close()
