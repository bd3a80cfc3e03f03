"""core.gallery.ray_runner: resource shares of the Ray pipeline (the pipeline itself runs in
tests/cli/test_index_search.py::test_ray_pipeline_gives_the_in_process_gallery)."""
import pytest

from core.gallery.ray_runner import cpu_shares


@pytest.mark.parametrize("cpus, workers", [(2, 1), (2, 2), (2, 4), (16, 2), (64, 8), (1, 1)])
def test_actors_and_a_read_task_always_fit(cpus, workers):
    actor, read = cpu_shares(cpus, workers)
    assert 0 < actor <= 1 and 0 < read <= 0.25
    assert 2 * workers * actor + read <= cpus


def test_large_nodes_give_each_actor_a_whole_core():
    assert cpu_shares(16, 2)[0] == 1.0
