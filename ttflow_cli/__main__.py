from ttflow_cli.cli.app import main

main()
