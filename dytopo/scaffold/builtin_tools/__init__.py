"""The built-in tools of an installed wheel: byte-identical copies of the repository's tools/.

A source checkout loads tools/ itself (dytopo.tools.static.BUILTIN_TOOLS); this folder exists
because a wheel has no repository. Edit tools/, then copy: tests/unit/test_scaffold.py fails
while the two differ and prints the command. Nothing imports this package: the registry loads
its files by path, like tools/.
"""
