from perlinsos_registry.app import main

main()
