from pose.networks import main

main()
