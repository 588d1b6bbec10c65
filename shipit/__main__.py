from shipit.entry import run

run()
