from perlinsos_premium.app import main

main()
