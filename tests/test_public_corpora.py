"""The shipped data configs against the public file set (and the 2021 one), end to end through the job.

The files are small stand-ins written by tests/_public_files.py with the public repository's exact
names and the line shapes its card gives."""

import os
import subprocess
import sys

import pytest
from _public_files import PUBLIC, REFERENCE_2021, triplet_object, write_files
from _tfrecords import read_tfrecords

from pipeline import format_check, job
from pipeline.data_config import load_data_config, resolve_corpora
from pipeline.manifest import read_manifest
from pipeline.record_schema import ROLE_ANCHOR as A
from pipeline.record_schema import ROLE_NEGATIVE as N
from pipeline.record_schema import ROLE_POSITIVE as P
from pipeline.record_schema import decode_record

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLIC_CONFIG = os.path.join(REPO, "data_config.json")
REFERENCE_CONFIG = os.path.join(REPO, "data_configs", "reference_2021.json")


@pytest.fixture(scope="module")
def public_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("embedding-training-data")
    write_files(str(root), PUBLIC)
    return str(root)


@pytest.fixture(scope="module")
def public_run(public_root, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("public_run") / "data")
    rc = job.run(
        [
            f"--data_config={PUBLIC_CONFIG}",
            f"--input_root={public_root}",
            f"--output_dir={out}",
            "--skip_missing_corpora",
            "--max_seq_length=32",
            "--expected_lines_tolerance=1",
        ]
    )  # 4-line stand-ins for files of millions of lines
    assert rc == 0
    return out, read_manifest(out)


def test_the_public_files_run_with_one_flag_and_nothing_is_rejected(public_run):
    config = load_data_config(PUBLIC_CONFIG)
    public_out, m = public_run
    assert [c["name"] for c in m["corpora"]] == [n for n in config.names if n != "reddit"]
    lines = {c.name: 4 * len(c.files) for c in config.corpora}  # 4 lines per stand-in file
    for c in m["corpora"]:
        assert c["rejected"]["total"] == 0, c
        assert c["lines_read"] == lines[c["name"]] == c["train_examples"] + c["validation_examples"]
    assert m["totals"]["rejected"] == 0 and m["totals"]["lines_read"] == sum(lines.values()) - lines["reddit"]
    # The sets' blank captions (one per stand-in file) are dropped and counted, their lines kept.
    sets = {"flickr30k_captions", "coco_captions", "wikianswers"}
    assert {
        c["name"]: c["dropped_texts"]["empty_member"] for c in m["corpora"] if c["dropped_texts"]["empty_member"]
    } == dict.fromkeys(sets, 1)
    # msmarco's stand-in is {"query", "pos", "neg"} objects: each record keeps every positive and negative.
    (msmarco,) = [c for c in m["corpora"] if c["name"] == "msmarco"]
    roles = sorted(
        tuple(decode_record(r)["roles"])
        for f in msmarco["train_files"] + msmarco["validation_files"]
        for r in read_tfrecords(os.path.join(public_out, f))
    )
    assert roles == sorted(tuple([A] + [P] * (1 + i % 2) + [N] * (1 + i % 3)) for i in range(4))
    # Reddit left out, recorded with its missing files, and the others' shares renormalised.
    assert [lo["name"] for lo in m["left_out"]["corpora"]] == ["reddit"]
    assert len(m["left_out"]["corpora"][0]["missing"]) == 4
    probs = m["left_out"]["probabilities"]
    assert probs["gooaq"]["configured"] == pytest.approx(247 / 2711, abs=1e-6)
    assert probs["gooaq"]["now"] == pytest.approx(247 / (2711 - 328), abs=1e-6)
    assert sum(p["now"] for p in probs.values()) == pytest.approx(1.0, abs=1e-5)


def test_without_the_flag_every_missing_file_is_named_in_one_line(public_root, tmp_path, capsys):
    rc = job.run([f"--data_config={PUBLIC_CONFIG}", f"--input_root={public_root}", f"--output_dir={tmp_path / 'o'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert "1 corpus(es) with missing files: corpus 'reddit': " in err and "--skip_missing_corpora" in err
    for year in (2015, 2016, 2017, 2018):
        assert os.path.join(public_root, "reddit", f"RC_{year}-*.zst") in err
    assert not os.path.exists(tmp_path / "o")  # nothing written


def test_the_reference_config_reads_the_2021_file_set(tmp_path):
    write_files(str(tmp_path), REFERENCE_2021)
    config, files, left_out = resolve_corpora(load_data_config(REFERENCE_CONFIG), str(tmp_path))
    assert len(config.corpora) == 27 and not left_out
    assert files["reddit"] == [str(tmp_path / "reddit" / f"reddit_{y}.jsonl.gz") for y in (2015, 2016, 2017, 2018)]
    for c in config.corpora:  # every 2021 file's lines fit its declared format
        for path in files[c.name]:
            result = format_check.check_sample(c, path)
            assert (result.sampled, result.rejected) == (4, 0), (c.name, result.describe())
    # ... and the public files do not: the public config is the one for them.
    with pytest.raises(Exception, match="missing files"):
        resolve_corpora(load_data_config(REFERENCE_CONFIG), str(tmp_path / "nowhere"))


def test_hf_paths_are_refused_offline_in_one_line(tmp_path):
    root = "hf://datasets/sentence-transformers/embedding-training-data"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    r = subprocess.run(
        [
            sys.executable,
            "beam_main.py",
            f"--data_config={PUBLIC_CONFIG}",
            f"--input_root={root}",
            f"--output_dir={tmp_path / 'o'}",
            "--corpora=gooaq",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in r.stderr.splitlines() if "error" in line.lower()]
    assert r.returncode == 2, r.stderr[-2000:]
    assert lines == [lines[-1]] and f"cannot list '{root}/gooaq_pairs.jsonl.gz'" in lines[-1], r.stderr[-2000:]


# The two line shapes the card documents for a triplet file: the shipped entries read msmarco-triplets and
# quora_duplicates_triplets in either, whichever the real files hold.
TRIPLET_FILES = {"msmarco": "msmarco-triplets.jsonl.gz", "quora_duplicates": "quora_duplicates_triplets.jsonl.gz"}


@pytest.mark.parametrize(
    "make", [triplet_object, lambda i, f: [f"{f} q {i}", f"{f} p {i}", f"{f} n {i}"]], ids=["object", "list"]
)
def test_the_shipped_triplet_entries_read_both_card_shapes(tmp_path, make):
    write_files(str(tmp_path), {name: make for name in TRIPLET_FILES.values()}, lines_per_file=6)
    config = load_data_config(PUBLIC_CONFIG).select(list(TRIPLET_FILES))
    kept, files, _ = resolve_corpora(config, str(tmp_path))
    format_check.check_before_start(kept, files)  # the start-up check passes
    for c in kept.corpora:
        assert c.record_format == "triplet" and not c.fields  # no mapping: the entry as shipped
        result = format_check.check_sample(c, files[c.name][0])
        assert (result.sampled, result.rejected) == (6, 0), result.describe()


def test_a_card_file_that_is_absent_is_named_with_the_skip_hint(public_root, tmp_path, capsys):
    # wikihow.jsonl.gz is listed by the card but one reader got a 404: the job names it before any work.
    root = tmp_path / "root"
    write_files(str(root), {k: v for k, v in PUBLIC.items() if k != "wikihow.jsonl.gz"}, lines_per_file=1)
    rc = job.run([f"--data_config={PUBLIC_CONFIG}", f"--input_root={root}", f"--output_dir={tmp_path / 'o'}"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and not os.path.exists(tmp_path / "o")
    assert "2 corpus(es) with missing files: corpus 'wikihow': " + str(root / "wikihow.jsonl.gz") in err
    assert err.endswith("; --skip_missing_corpora leaves out corpora none of whose files exist")
    _, _, left_out = resolve_corpora(load_data_config(PUBLIC_CONFIG), str(root), skip_missing=True)
    assert [lo.name for lo in left_out] == ["wikihow", "reddit"]
