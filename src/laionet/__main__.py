from laionet.cli import main

main()
