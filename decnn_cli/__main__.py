from decnn_cli.cli import main

main()
