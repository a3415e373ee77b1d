from ganstop.cli import main

main()
