from pose.models.networks import main

main()
