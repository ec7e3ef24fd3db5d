from cloud_init.cli import main

main()
