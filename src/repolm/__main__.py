from repolm.cli import main

main()
