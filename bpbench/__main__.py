if __name__ == "__main__":   # guarded: a spawned helper process may import this module
    from bpbench import processes
    processes.child_setup()   # a compare cell: dies with compare
    from bpbench.cli import main
    main()
