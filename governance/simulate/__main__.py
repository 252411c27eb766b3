from governance.simulate.run import main

main()
