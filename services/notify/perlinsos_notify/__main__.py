from perlinsos_notify.app import main

main()
