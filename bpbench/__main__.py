from bpbench.cli import main

main()
