from bpbench.cli import main

if __name__ == "__main__":   # guarded: a spawned helper process may import this module
    main()
