from zq.cli import main

main()
