"""core.bench.code_stats on a made-up checkout."""
from core.bench.code_stats import code_stats


def test_counts_lines_methods_and_modules(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "demo").mkdir()
    (tmp_path / "app.py").write_text("def run():\n    a = 1\n    return a\n")
    (tmp_path / "core" / "m.py").write_text("class A:\n    def f(self):\n        pass\n\n    def g(self):\n        pass\n")
    stats = code_stats(tmp_path)
    assert stats["functions"][0] == (3, "app.py:run")
    assert stats["classes"] == [(2, "core/m.py:A")]
    assert stats["modules_per_folder"] == {".": 1, "core": 1}
