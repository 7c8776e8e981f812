"""Which of the repository's top-level files an installed wheel carries, and where: one table.

Each built-in tool, role card, topology and example document is committed once, at the
repository's top level (tools/, agents/, topologies/, examples/docs/), where the repository runs
them and people edit them. A wheel has no repository, so the build copies them into the package
(build_scaffold.py, next to pyproject.toml), and from a checkout `dytopo init` reads them where
they are (dytopo.scaffold). No imports here: the build reads this file by path, before dytopo's
dependencies need to be installed.
"""

COPIED: tuple[tuple[str, str, str], ...] = (
    # (the repository's folder, where a wheel carries its files under dytopo/, which files)
    ("tools", "scaffold/builtin_tools", "*.py"),
    ("agents", "scaffold/folder/agents", "*.md"),
    ("topologies", "scaffold/folder/topologies", "*.yaml"),
    ("examples/docs", "scaffold/folder/examples/docs", "[!.]*"),
)
