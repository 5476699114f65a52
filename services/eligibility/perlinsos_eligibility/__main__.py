from perlinsos_eligibility.app import main

main()
