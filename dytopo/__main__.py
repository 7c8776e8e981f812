from dytopo.cli import main

main()
