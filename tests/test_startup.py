"""trainer/train/startup.py: what --compilation_cache does to JAX's persistent compilation cache setting."""
import jax
import pytest

from trainer.train.startup import enable_compilation_cache


@pytest.fixture
def cache_setting():
    from jax.experimental.compilation_cache import compilation_cache

    before = jax.config.jax_compilation_cache_dir
    yield
    jax.config.update("jax_compilation_cache_dir", before)
    compilation_cache.reset_cache()  # the worker's next tests read the restored setting


def test_off_turns_off_a_cache_set_from_the_environment_and_auto_on_cpu_keeps_it(tmp_path, cache_setting):
    jax.config.update("jax_compilation_cache_dir", str(tmp_path / "from_env"))  # as JAX_COMPILATION_CACHE_DIR does
    assert enable_compilation_cache("auto", str(tmp_path)) is None  # CPU: no cache of its own...
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "from_env")  # ...and the user's stays
    assert enable_compilation_cache("off", str(tmp_path)) is None
    assert jax.config.jax_compilation_cache_dir is None
    assert enable_compilation_cache("workdir", str(tmp_path)) == str(tmp_path / "compilation_cache")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "compilation_cache")
    assert enable_compilation_cache(str(tmp_path / "mine"), str(tmp_path)) == str(tmp_path / "mine")
    assert jax.config.jax_compilation_cache_dir == str(tmp_path / "mine")
