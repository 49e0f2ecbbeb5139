import json

from trainer.train.metrics_writer import MetricsWriter, read_metrics


def test_jsonl_and_tensorboard(tmp_path):
    w = MetricsWriter(str(tmp_path))
    w.write(1, {"loss": 2.5, "corpus": "a", "nan": float("nan")})
    w.write(2, {"loss": 1.5})
    rows = read_metrics(str(tmp_path))
    assert rows == [{"step": 1, "loss": 2.5, "corpus": "a", "nan": "nan"}, {"step": 2, "loss": 1.5}]
    events = list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_disabled_writer_writes_nothing(tmp_path):
    MetricsWriter(str(tmp_path / "w"), enabled=False).write(1, {"loss": 1.0})
    assert not (tmp_path / "w").exists()


def test_object_store_workdir_is_rewritten_whole():
    import fsspec

    w = MetricsWriter("memory://run1")  # fsspec's in-memory store: no append, like gs://
    w.write(1, {"loss": 2.0})
    w.write(2, {"loss": 1.0})
    lines = fsspec.open("memory://run1/metrics.jsonl", "r").open().read().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [1, 2]
