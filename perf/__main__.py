from perf.cli import main

# Guarded: worker processes are spawned, and spawn re-imports this module as __mp_main__.
if __name__ == "__main__":
    main()
