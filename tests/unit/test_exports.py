import dytopo


def test_all_is_sorted_and_importable() -> None:
    names = [n for n in dytopo.__all__ if n != "__version__"]
    assert names == sorted(names)
    for name in dytopo.__all__:
        assert hasattr(dytopo, name), name
