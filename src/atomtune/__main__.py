from atomtune.cli import main

main()
